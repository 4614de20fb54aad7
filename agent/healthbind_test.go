package agent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
)

// TestHealthBindLogsCauses: the binds after the first failed one log a
// line at the default verbosity only when the cause changes, and one when
// the address is bound, with the address bound and the attempts it took;
// the same cause again is at -v=2.
func TestHealthBindLogsCauses(t *testing.T) {
	inUse := fmt.Errorf("health server: listen tcp :8471: bind: %w", syscall.EADDRINUSE)
	notHere := fmt.Errorf("health server: listen tcp 198.18.1.2:8471: bind: %w", syscall.EADDRNOTAVAIL)
	results := []error{inUse, inUse, notHere, notHere, inUse, nil}
	// bind runs the binds that follow the first, logging to lines at
	// verbosity v.
	bind := func(lines *logLines, v int) {
		calls := 0
		b := newHealthBind(":8471", funcr.New(lines.add, funcr.Options{Verbosity: v}), func(string) (string, error) {
			calls++
			if err := results[calls-1]; err != nil {
				return "", err
			}
			return "[::]:8471", nil
		})
		b.explain = func(_ string, err error) error { return err }
		b.backoff = delay.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}
		b.failedAtStart(inUse)
		if !b.run(t.Context(), inUse) {
			t.Fatalf("-v=%d: run returned false before its context ended", v)
		}
		if calls != len(results) {
			t.Errorf("-v=%d: %d binds, want %d", v, calls, len(results))
		}
	}
	v0, all := &logLines{}, &logLines{}
	bind(v0, 0)
	bind(all, 2)
	got := v0.get()
	want := []string{"cannot listen on the health server's address", "still cannot listen", "still cannot listen", `"health server listening"`}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(want); i++ {
		ok = strings.Contains(got[i], want[i])
	}
	if !ok || !strings.Contains(got[len(got)-1], `"addr"="[::]:8471" "attempts"=7`) {
		t.Errorf("lines at the default verbosity:\n%s\nwant, in order, %q, the last with the address bound, [::]:8471, and attempts=7", strings.Join(got, "\n"), want)
	}
	if n := all.count("cannot listen on the health server's address yet"); n != 3 {
		t.Errorf("%d lines of a failure for the cause logged last at -v=2, want 3:\n%s", n, strings.Join(all.get(), "\n"))
	}

	// A stop ends the wait.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := newHealthBind(":8471", funcr.New(v0.add, funcr.Options{}), func(string) (string, error) { return "", inUse })
	if b.run(ctx, inUse) {
		t.Error("run returned true with its context done")
	}
}

// TestHealthAddrUnavailableAtStart: the health server's address cannot be
// bound at start, on h1 because the test listens on its port, on h2
// because its IP is not on the host. Each agent starts all the same,
// becomes ready (its log says so; /readyz cannot) and programs its peer,
// and its log names the address and why, on h1 with the test's process
// as the holder; a bind again fails the same way. Once the test lets the
// port go and adds h2's IP, both serve /healthz within the retry delay. Before, both exited 1 at start,
// and their restarts failed the same way.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agentd; the test listens on 198.18.0.1:8471
//	               ├─ h2 198.18.0.2   agentd --healthz-addr=198.18.1.2:8471, an IP added later
//	               └─ etcd 198.18.0.254  a real etcd
func TestHealthAddrUnavailableAtStart(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 2})
	ctx := t.Context()
	h1, h2 := c.Host(1), c.Host(2)
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/healthbind"
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	squatter, err := h1.Listen("tcp", h1.HealthzAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer squatter.Close()
	h2Addr := netip.AddrPortFrom(netip.MustParseAddr("198.18.1.2"), cluster.DefaultHealthzPort).String()
	if _, err := h1.StartAgent(ctx, "--etcd-prefix="+prefix); err != nil {
		t.Fatal(err)
	}
	if _, err := h2.StartAgent(ctx, "--etcd-prefix="+prefix, "--healthz-addr="+h2Addr); err != nil {
		t.Fatal(err)
	}

	// ready waits for h's agent to log that it is ready and to route the
	// subnet of its peer.
	ready := func(h, peer *cluster.Host) {
		t.Helper()
		err := h.Agent().Eventually(ctx, 60*time.Second, func() error {
			log, err := h.AgentLog()
			if err != nil {
				return err
			}
			if !strings.Contains(log, `] "ready"`) {
				return fmt.Errorf("%s: no line saying the agent is ready", h)
			}
			env, err := peer.SubnetEnv()
			if err != nil {
				return err
			}
			sn, err := netip.ParsePrefix(env["FLANNEL_SUBNET"])
			if err != nil {
				return err
			}
			return h.WithNetlink(func(nl *netlink.Handle) error {
				routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: 74}, netlink.RT_FILTER_PROTOCOL)
				if err != nil {
					return err
				}
				for _, rt := range routes {
					if rt.Dst != nil && rt.Dst.String() == sn.Masked().String() {
						return nil
					}
				}
				return fmt.Errorf("%s: no route to %s's subnet %s", h, peer, sn.Masked())
			})
		})
		if err != nil {
			log, _ := h.AgentLog()
			t.Fatalf("%v; its log:\n%s", err, log)
		}
	}
	ready(h1, h2)
	ready(h2, h1)
	for _, w := range []struct {
		h    *cluster.Host
		want []string
	}{
		{h1, []string{"cannot listen on the health server's address; running without", "address already in use", fmt.Sprintf("held by agent.test (pid %d): stop it (kill %[1]d)", os.Getpid())}},
		{h2, []string{"cannot listen on the health server's address; running without", "cannot assign requested address", "198.18.1.2 is not an address of this host"}},
	} {
		log, _ := w.h.AgentLog()
		for _, s := range w.want {
			if !strings.Contains(log, s) {
				t.Errorf("%s's log has no %q:\n%s", w.h, s, log)
			}
		}
	}

	// A bind again fails for the same cause, logged at -v=2 only (the
	// harness runs agents with -v=2); the agent runs on.
	for _, h := range []*cluster.Host{h1, h2} {
		err := h.Agent().Eventually(ctx, 10*time.Second, func() error {
			log, err := h.AgentLog()
			if err != nil {
				return err
			}
			if !strings.Contains(log, "cannot listen on the health server's address yet") {
				return fmt.Errorf("%s: no second bind logged", h)
			}
			return nil
		})
		if err != nil {
			log, _ := h.AgentLog()
			t.Fatalf("%v; its log:\n%s", err, log)
		}
	}

	squatter.Close()
	if err := h2.WithNetlink(func(nl *netlink.Handle) error {
		lo, err := nl.LinkByName("lo")
		if err != nil {
			return err
		}
		return nl.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 18, 1, 2), Mask: net.CIDRMask(32, 32)}})
	}); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	for _, w := range []struct {
		h    *cluster.Host
		addr string
	}{{h1, h1.HealthzAddr()}, {h2, h2Addr}} {
		// The delay between binds reaches 30 s; each is drawn from
		// its second half, so the bind after the release comes
		// within 30 s.
		err := w.h.Agent().Eventually(ctx, healthBindMax+5*time.Second, func() error {
			code, body, err := w.h.HealthGetAt(ctx, w.addr, "/healthz")
			if err != nil {
				return err
			}
			if code != http.StatusOK {
				return fmt.Errorf("/healthz: %d %s", code, body)
			}
			return nil
		})
		if err != nil {
			log, _ := w.h.AgentLog()
			t.Fatalf("%s, after the address was freed: %v; its log:\n%s", w.h, err, log)
		}
		t.Logf("%s: /healthz answers %v after the address was freed", w.h, time.Since(freed).Round(time.Millisecond))
		if log, _ := w.h.AgentLog(); !strings.Contains(log, `"health server listening"`) {
			t.Errorf("%s's log has no line saying the health server listens:\n%s", w.h, log)
		}
	}
	if code, _, err := h1.HealthGet(ctx, "/readyz"); err != nil || code != http.StatusOK {
		t.Errorf("h1's /readyz once bound: %d, %v; want 200", code, err)
	}
}

// TestTCPPortHolders: the holders named are those of listening sockets in
// the way of the bind: on its port, on its IP or every address, IPv4 or
// IPv6; not a socket on another IP of the same port, nor one on another
// port.
func TestTCPPortHolders(t *testing.T) {
	cluster.RequireRoot(t)
	inNewNetns(t, func() {
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		if err != nil {
			t.Errorf("set lo up: %v", err)
			return
		}
		for _, addr := range []string{"127.0.0.1:8471", "[::]:8472"} {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Errorf("listen on %s: %v", addr, err)
				return
			}
			defer ln.Close()
		}
		self := fmt.Sprintf("agent.test (pid %d): stop it (kill %[1]d)", os.Getpid())
		unseen := "a process that this agent cannot see in /proc"
		for addr, want := range map[string]string{
			"127.0.0.1:8471":  self,
			":8471":           self,
			"0.0.0.0:8471":    self,
			"localhost:8471":  self,
			"127.0.0.2:8471":  unseen,
			"127.0.0.1:8473":  unseen,
			"198.18.0.1:8472": self,
			"[::1]:8472":      self,
		} {
			if got := tcpPortHolders(addr); !strings.HasPrefix(got, want) {
				t.Errorf("holders of %s: %q, want %q", addr, got, want)
			}
		}
	})
}
