package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"k8s.io/klog/v2"
)

// TestHealthAddrPortZeroLogged: agentd given a --healthz-addr with port 0
// listens on a port the kernel picks, and its log names it: the line
// "health server listening" has the address bound, addr=127.0.0.1:<port>,
// where /status answers; agentctl status must be given that port. So does
// the line after a bind retried until the address's IP was on the host
// (198.18.1.2:0, added to lo later). Before 2026-12-07 the agent logged no
// line when the first bind succeeded, and the retried bind's line said
// addr=198.18.1.2:0, which names no port. The agent runs whole, in a
// network namespace of its own (runInOwnNetns) with lo up, its etcd a
// socket that no one listens on: it waits for etcd, with its health
// server up.
func TestHealthAddrPortZeroLogged(t *testing.T) {
	inOwnNetns(t, healthAddrPortZeroChild)
}

func healthAddrPortZeroChild(t *testing.T) {
	loopbackUp(t)
	t.Run("bound at start", func(t *testing.T) {
		healthPortZeroRun(t, "127.0.0.1:0", nil)
	})
	t.Run("bound again once its IP is on the host", func(t *testing.T) {
		healthPortZeroRun(t, "198.18.1.2:0", func() error {
			lo, err := netlink.LinkByName("lo")
			if err != nil {
				return err
			}
			return netlink.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 1, 2), Mask: net.CIDRMask(32, 32)}})
		})
	})
}

// listeningAddr is the address of a "health server listening" line.
var listeningAddr = regexp.MustCompile(`"msg"="health server listening" "addr"="([^"]*)"`)

// healthPortZeroRun runs the agent with --healthz-addr addr, whose port is
// 0, until its log says where its health server listens, and checks that
// /status answers there. addIP, when not nil, adds addr's IP once the agent
// has logged that it cannot bind it.
func healthPortZeroRun(t *testing.T, addr string, addIP func() error) {
	cfg := stateLockConfig(t)
	cfg.HealthzAddr = addr
	var logs logLines
	ctx, cancel := context.WithCancel(klog.NewContext(t.Context(), funcr.New(logs.add, funcr.Options{})))
	var runErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runErr = Run(ctx, cfg)
	}()
	defer func() {
		cancel()
		<-done
		if runErr != nil && !errors.Is(runErr, context.Canceled) {
			t.Errorf("the agent after its stop: %v", runErr)
		}
	}()
	// wait waits for a line that has want, and returns it.
	wait := func(want string) string {
		t.Helper()
		var line string
		err := cluster.Eventually(ctx, 10*time.Second, func() error {
			select {
			case <-done:
				return fmt.Errorf("the agent returned: %v", runErr)
			default:
			}
			for _, l := range logs.get() {
				if strings.Contains(l, want) {
					line = l
					return nil
				}
			}
			return fmt.Errorf("no line with %q", want)
		})
		if err != nil {
			t.Fatalf("--healthz-addr=%s: %v; the agent's log:\n%s", addr, err, strings.Join(logs.get(), "\n"))
		}
		return line
	}
	if addIP != nil {
		wait(`"msg"="cannot listen on the health server's address; running without`)
		if err := addIP(); err != nil {
			t.Fatal(err)
		}
	}
	line := wait(`"msg"="health server listening"`)
	m := listeningAddr.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("--healthz-addr=%s: %s; want the address bound in addr=", addr, line)
	}
	bound, err := netip.ParseAddrPort(m[1])
	if err != nil || bound.Port() == 0 || bound.Addr() != netip.MustParseAddrPort(addr).Addr() {
		t.Fatalf("--healthz-addr=%s: %s; want addr= with the port the kernel picked (%v)", addr, line, err)
	}
	t.Logf("--healthz-addr=%s: %s", addr, line)

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+bound.String()+"/status", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /status at the address logged: %v", err)
	}
	defer resp.Body.Close()
	var st Status
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		err = json.Unmarshal(body, &st)
	}
	if resp.StatusCode != http.StatusOK || err != nil {
		t.Errorf("GET /status at %s: %s, %v; want the agent's status", bound, resp.Status, err)
	}
}
