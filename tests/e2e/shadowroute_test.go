package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/cluster"
)

// TestShadowedPeerSubnetSaid: on h1, another program's route more specific
// than h2's subnet and inside it (a blackhole for a /26, as Calico leaves
// for its IPAM blocks) takes h1's traffic to h2's container while h1's
// datapath stays exactly as the agent wants it, so no repair comes and,
// before 2026-12-07, nothing was said. The agent leaves the route alone and
// logs it within driftRepairWithin, naming the route and h2's subnet; once
// the route is deleted, it says so and the container is reached again.
//
//	h1 (blackhole 10.244.B.0/26) ── c1 ──✗──> h2's c1 10.244.B.2
func TestShadowedPeerSubnetSaid(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend))
			h1, h2 := f.c.Host(1), f.c.Host(2)
			cs := f.startAll()
			c1, c2 := cs[0], cs[1]
			sn2 := hostSubnet(t, h2)
			block := netip.PrefixFrom(sn2.Addr(), 26).String()
			before, err := datapathState(backend, h1)
			if err != nil {
				t.Fatal(err)
			}
			off := logLen(t, h1)
			start := time.Now()
			if _, err := h1.Exec(f.ctx, "ip", "route", "add", "blackhole", block, "proto", "static"); err != nil {
				t.Fatal(err)
			}
			found := []string{`"another route takes part of a peer's subnet"`, `route="blackhole ` + block + ` proto static"`, `peerSubnet="` + sn2.String() + `"`}
			f.eventually("the blackhole route logged", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), found)
			})
			took := time.Since(start)
			if took > driftRepairWithin {
				t.Errorf("the blackhole route logged %v after it was added; want within %v", took.Round(time.Millisecond), driftRepairWithin)
			}
			t.Logf("the blackhole route logged within %v of the command's start", took.Round(time.Millisecond))
			if r, err := c1.Ping(f.ctx, c2.IP(), 3, 50*time.Millisecond); err != nil || r.Received != 0 {
				t.Fatalf("ping %s behind the blackhole route: %+v, %v; want none answered", c2.IP(), r, err)
			}
			now, err := datapathState(backend, h1)
			if err != nil {
				t.Fatal(err)
			}
			line := "blackhole " + block + " proto static"
			if lines := strings.Split(now, "\n"); !slices.Contains(lines, line) ||
				strings.Join(slices.DeleteFunc(lines, func(l string) bool { return l == line }), "\n") != before {
				t.Errorf("h1's datapath with the blackhole route:\n%s\nwant the one before and %q:\n%s", now, line, before)
			}
			if n := strings.Count(logFrom(t, h1, off), `"another route takes part of a peer's subnet"`); n != 1 {
				t.Errorf("%d lines about the blackhole route, want 1", n)
			}
			if _, err := h1.Exec(f.ctx, "ip", "route", "del", block); err != nil {
				t.Fatal(err)
			}
			f.eventually("the blackhole route's end logged", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), found,
					[]string{`"a route that took part of a peer's subnet no longer does"`, `route="blackhole ` + block + ` proto static"`})
			})
			f.pingAll([]*cluster.Container{c1, c2})
		})
	}
}

// TestLocalRouteOverPeerSaid: on h1, a route of the local table over h2's
// subnet (AnyIP: `ip route add local 10.244.B.0/24 dev lo`) makes h1's
// kernel take h2's container's address for its own, ahead of the route or
// forwarding entry the agent keeps for h2, with each backend. The agent
// leaves the route alone, logs it within driftRepairWithin, naming it and
// h2's subnet, and /status and agentctl status list it; once it is
// deleted, it says so and the containers reach each other again. Before,
// host-gw and udp said nothing, nor did vxlan for a route added after h2's
// was in.
//
//	h1 (local 10.244.B.0/24 dev lo) ── c1 ──✗──> h2's c1 10.244.B.2
func TestLocalRouteOverPeerSaid(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend))
			h1, h2 := f.c.Host(1), f.c.Host(2)
			cs := f.startAll()
			c1, c2 := cs[0], cs[1]
			sn2 := hostSubnet(t, h2)
			off := logLen(t, h1)
			start := time.Now()
			if _, err := h1.Exec(f.ctx, "ip", "route", "add", "local", sn2.String(), "dev", "lo", "table", "local", "proto", "static"); err != nil {
				t.Fatal(err)
			}
			route := "local " + sn2.String() + " dev#1 table local proto static"
			found := []string{`"another route takes part of a peer's subnet"`, `route="` + route + `"`, `peerSubnet="` + sn2.String() + `"`}
			f.eventually("the local route logged", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), found)
			})
			took := time.Since(start)
			if took > driftRepairWithin {
				t.Errorf("the local route logged %v after it was added; want within %v", took.Round(time.Millisecond), driftRepairWithin)
			}
			t.Logf("the local route logged within %v of the command's start", took.Round(time.Millisecond))
			if out, err := h1.Exec(f.ctx, "ip", "route", "get", c2.IP().String()); err != nil || !strings.HasPrefix(string(out), "local ") {
				t.Fatalf("h1 routes %s: %q, %v; want it local (the test's premise)", c2.IP(), out, err)
			}
			f.eventually("/status listing it", driftRepairWait, func() error {
				st := agentStatus(t, f, h1)
				if want := []agent.ShadowingRoute{{Route: route, PeerSubnet: sn2.String()}}; !slices.Equal(st.ShadowingRoutes, want) {
					return fmt.Errorf("/status shadowingRoutes %+v, want %+v", st.ShadowingRoutes, want)
				}
				return nil
			})
			if out := f.mustCtl(h1, "status", "--agent", "http://"+h1.HealthzAddr()); !strings.Contains(out, route+" takes part of "+sn2.String()) {
				t.Errorf("agentctl status lacks %q:\n%s", route+" takes part of "+sn2.String(), out)
			}
			if n := strings.Count(logFrom(t, h1, off), `"another route takes part of a peer's subnet"`); n != 1 {
				t.Errorf("%d lines about the local route, want 1", n)
			}
			if _, err := h1.Exec(f.ctx, "ip", "route", "del", "local", sn2.String(), "dev", "lo", "table", "local"); err != nil {
				t.Fatal(err)
			}
			f.eventually("the local route's end logged", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), found,
					[]string{`"a route that took part of a peer's subnet no longer does"`, `route="` + route + `"`})
			})
			f.pingAll([]*cluster.Container{c1, c2})
		})
	}
}
