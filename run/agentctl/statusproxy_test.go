package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/vishvananda/netlink"
)

// statusProxyChildEnv, set, makes TestStatusAsksAgentWithoutProxy the child
// that runs in a network namespace of its own.
const statusProxyChildEnv = "AGENTCTL_STATUS_PROXY_CHILD"

// TestStatusAsksAgentWithoutProxy: status asks this host's agent directly,
// whatever http_proxy, HTTP_PROXY and HTTPS_PROXY in the operator's shell
// say, as the kubelet's probes do: a proxy cannot reach a node's health
// port. The agent listens on a node address, 198.18.0.1 (the pod-IP recipe's
// "[$(POD_IP)]:8471", or an address given to --agent), which Go's default
// client sends through the proxy (it skips only localhost and loopback).
// Before 2026-12-07 status sent GET http://198.18.0.1:<port>/status to the
// proxy, which answered 502 (exit 1, "502 Bad Gateway"), and never asked
// the agent. It runs as a child of the test in a network namespace of its
// own, where the test adds 198.18.0.1 to lo, and where the environment is
// read for the first time (Go's net/http reads the proxy variables once
// per process).
func TestStatusAsksAgentWithoutProxy(t *testing.T) {
	if os.Getenv(statusProxyChildEnv) != "" {
		statusProxyChild(t)
		return
	}
	if os.Geteuid() != 0 {
		msg := "needs root for a network namespace of its own (CLONE_NEWNET)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := testchild.Run(ctx, t, "TestStatusAsksAgentWithoutProxy",
		&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}, statusProxyChildEnv+"=1")
	if err != nil {
		t.Fatalf("the child in its own network namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestStatusAsksAgentWithoutProxy") {
		t.Fatalf("the child ran no test:\n%s", out)
	}
}

// statusProxyChild is the test proper, in a network namespace of its own.
func statusProxyChild(t *testing.T) {
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err == nil {
		err = netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 0, 1), Mask: net.CIDRMask(32, 32)}})
	}
	if err != nil {
		t.Fatalf("lo with 198.18.0.1: %v", err)
	}

	// The proxy records what it is asked and answers as one that
	// cannot reach the node's health port.
	var mu sync.Mutex
	var proxied []string
	proxy := serveOn(t, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxied = append(proxied, r.Method+" "+r.RequestURI)
		mu.Unlock()
		http.Error(w, "cannot reach the node", http.StatusBadGateway)
	}))
	st, err := json.Marshal(agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"})
	if err != nil {
		t.Fatal(err)
	}
	node := serveOn(t, "198.18.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		w.Write(st)
	}))

	for _, k := range []string{"http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"} {
		t.Setenv(k, "http://"+proxy)
	}
	for _, k := range []string{"no_proxy", "NO_PROXY", "AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT", "FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT"} {
		t.Setenv(k, "")
	}
	_, port, _ := net.SplitHostPort(node)
	for _, tc := range []struct {
		name, env string
		args      []string
	}{
		{name: "--agent", args: []string{"--agent", node}},
		{name: "AGENTD_HEALTHZ_ADDR", env: "[198.18.0.1]:" + port},
	} {
		t.Setenv("AGENTD_HEALTHZ_ADDR", tc.env)
		var out, errOut bytes.Buffer
		code := run(t.Context(), append([]string{"status"}, tc.args...), &out, &errOut, nil)
		if code != 0 || !strings.Contains(out.String(), "10.244.7.0/24") {
			t.Errorf("%s: status with http_proxy=http://%s: exit %d, want 0 and the agent's subnet\nstdout: %s\nstderr: %s", tc.name, proxy, code, out.String(), errOut.String())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(proxied) > 0 {
		t.Errorf("the proxy was asked %q, want nothing: status asks this host's agent directly", proxied)
	}
}

// serveOn serves h on addr until the test ends and returns the address
// bound.
func serveOn(t *testing.T, addr string, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("server on %s: %v", addr, err)
		}
	})
	return ln.Addr().String()
}
