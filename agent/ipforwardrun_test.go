package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestAgentSaysIPForwardingOff: an agent on a host with net.ipv4.ip_forward
// at 0 (h1, a fresh namespace: nothing set it) says in /status (agentctl
// status's source) from its start that its containers' packets are not
// forwarded to other hosts, and is ready all the same. Set to 1 soon after,
// as dockerd does at each boot of a docker host (docker.service starts
// after agentd.service is ready), /status clears and nothing was logged.
// Left at 0 for the grace, it is logged once at error level, and set to 1
// then, once that it is on again, and /status clears. Before 2026-12-06
// pods of such a host reached no other host while every backend looked
// well, with no message anywhere (helper 254, on the namespace cluster).
func TestAgentSaysIPForwardingOff(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/fwd/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, ipForwardRunChild)
}

func ipForwardRunChild(t *testing.T, etcd string) {
	// The whole process runs in h1: so do the agent's reads and this
	// test's writes.
	const file = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(file); err != nil || string(b) != "0\n" {
		t.Fatalf("%s in h1 at the start: %q, %v; want 0, as in a fresh namespace", file, b, err)
	}
	setForward := func(v string) {
		t.Helper()
		if err := os.WriteFile(file, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := hostConfig(t, etcd, "/fwd")
	logs := &logLines{}
	log := childLogger(t, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// status GETs /status as JSON: the field, not the Go type, is what
	// agentctl and other readers get.
	status := func() (map[string]any, error) {
		code, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil || code != 200 {
			return nil, fmt.Errorf("/status: %d %s %v", code, body, err)
		}
		var st map[string]any
		return st, json.Unmarshal(body, &st)
	}
	// said counts the lines logged with msg.
	said := func(msg string) int {
		n := 0
		for _, l := range logs.get() {
			if strings.Contains(l, msg) {
				n++
			}
		}
		return n
	}
	// passes waits for two more reconcile passes (one a second), each of
	// which reads the value again, and returns /status after them.
	passes := func() map[string]any {
		t.Helper()
		var st map[string]any
		var last any
		seen := 0
		err := cluster.Eventually(ctx, 20*time.Second, func() error {
			var err error
			if st, err = status(); err != nil {
				return err
			}
			if st["lastResync"] != last {
				last = st["lastResync"]
				seen++
			}
			if seen < 3 {
				return fmt.Errorf("lastResync %v: waiting for two more passes", st["lastResync"])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	// offIs checks /status's ipForwardingOff and readiness.
	offIs := func(when string, st map[string]any, off bool) {
		t.Helper()
		why, ok := st["ipForwardingOff"].(string)
		if ok != off || off && !strings.Contains(why, "sysctl -w net.ipv4.ip_forward=1") || st["ready"] != true {
			t.Errorf("/status %s: ready %v, ipForwardingOff %q; want ready, and it saying how to set it: %v", when, st["ready"], why, off)
		}
	}
	const off, on = "IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0)", "IPv4 forwarding is on again"

	// A docker host's boot: the agent's grace is a minute.
	stop := runReadyChildAgent(t, ctx, newFakeAgent(cfg, log))
	offIs("with ip_forward 0", passes(), true)
	setForward("1")
	offIs("with ip_forward 1 set after the start", passes(), false)
	stop()
	if n, m := said(off), said(on); n != 0 || m != 0 {
		t.Errorf("ip_forward set to 1 within the grace: %q logged %d times, %q %d times; want neither", off, n, on, m)
	}

	// Nothing sets it: the grace is cut to 2 s (two passes).
	setForward("0")
	a := newFakeAgent(cfg, log)
	a.ipForward = newIPForwardCheck("/proc/sys", log, a.obs.ipForwardingOff)
	a.ipForward.grace = 2 * time.Second
	stop = runReadyChildAgent(t, ctx, a)
	defer stop()
	if err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if said(off) == 0 {
			return fmt.Errorf("no %q logged", off)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	offIs("with ip_forward 0 past the grace", passes(), true)
	if n := said(off); n != 1 {
		t.Errorf("%q logged %d times over the grace and several passes, want once", off, n)
	}
	setForward("1")
	offIs("with ip_forward 1 set after the line", passes(), false)
	if n, m := said(on), said(off); n != 1 || m != 1 {
		t.Errorf("after ip_forward 1 and several passes: %q logged %d times, %q %d times; want each once", on, n, off, m)
	}
}
