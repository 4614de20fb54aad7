package e2e

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/cluster"
)

// TestShadowFindingsShown: on h1, another program's blackhole route for a
// /26 of h2's subnet, and a docker0 left at a subnet no host holds, with
// each backend. Both are logged within driftRepairWithin, as
// TestShadowedPeerSubnetSaid and TestStrayBridgeAddressSaid find for vxlan
// and host-gw, now by udp too (its one route for the network through
// flannel0 is shorter than the blackhole's); /status lists them
// (shadowingRoutes, strayAddresses) and agentctl status shows them while
// they hold, and neither once they are gone. Before, udp said nothing, and
// /status and agentctl status showed nothing for any backend.
//
//	h1 (blackhole 10.244.B.0/26, docker0 10.244.250.1/24) ── c1 ──✗──> h2's c1 10.244.B.2
func TestShadowFindingsShown(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			f := newFixture(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend))
			h1, h2 := f.c.Host(1), f.c.Host(2)
			cs := f.startAll()
			c1, c2 := cs[0], cs[1]
			sn1, sn2 := hostSubnet(t, h1), hostSubnet(t, h2)
			free := netip.MustParsePrefix("10.244.250.0/24") // leases come from the first 100 free subnets
			if free == sn1 || free == sn2 {
				t.Fatalf("%s is leased (h1 %s, h2 %s); want it free", free, sn1, sn2)
			}
			block := netip.PrefixFrom(sn2.Addr(), 26).String()
			bridgeAddr := netip.PrefixFrom(free.Addr().Next(), 24).String()
			route := "blackhole " + block + " proto static"
			off := logLen(t, h1)
			start := time.Now()
			for _, c := range [][]string{
				{"route", "add", "blackhole", block, "proto", "static"},
				{"link", "add", "docker0", "type", "bridge"}, {"addr", "add", bridgeAddr, "dev", "docker0"}, {"link", "set", "docker0", "up"},
			} {
				if _, err := h1.Exec(f.ctx, "ip", c...); err != nil {
					t.Fatal(err)
				}
			}
			shadowed := []string{`"another route takes part of a peer's subnet"`, `route="` + route + `"`, `peerSubnet="` + sn2.String() + `"`}
			stray := []string{`"an address of this host routes another subnet of the cluster network to its interface"`, `iface="docker0"`,
				`address="` + bridgeAddr + `"`, `route="` + free.String() + `"`, `ownSubnet="` + sn1.String() + `"`}
			f.eventually("the blackhole route and docker0's address logged", driftRepairWait, func() error {
				log := logFrom(t, h1, off)
				return errors.Join(logInOrder(log, shadowed), logInOrder(log, stray))
			})
			took := time.Since(start)
			if took > driftRepairWithin {
				t.Errorf("the blackhole route and docker0's address logged %v after they were added; want within %v", took.Round(time.Millisecond), driftRepairWithin)
			}
			t.Logf("the blackhole route and docker0's address logged within %v of the first command's start", took.Round(time.Millisecond))
			wantRoutes := []agent.ShadowingRoute{{Route: route, PeerSubnet: sn2.String()}}
			wantStrays := []agent.StrayAddress{{Iface: "docker0", Address: bridgeAddr, Route: free.String()}}
			// /status takes the pass's result once the pass is over.
			f.eventually("/status listing both", driftRepairWait, func() error {
				st := agentStatus(t, f, h1)
				if !slices.Equal(st.ShadowingRoutes, wantRoutes) || st.ShadowingRoutesTotal != 1 ||
					!slices.Equal(st.StrayAddresses, wantStrays) || st.StrayAddressesTotal != 1 {
					return fmt.Errorf("/status shadowingRoutes %+v (%d), strayAddresses %+v (%d); want %+v and %+v",
						st.ShadowingRoutes, st.ShadowingRoutesTotal, st.StrayAddresses, st.StrayAddressesTotal, wantRoutes, wantStrays)
				}
				return nil
			})
			out := f.mustCtl(h1, "status", "--agent", "http://"+h1.HealthzAddr())
			for _, w := range []string{route + " takes part of " + sn2.String(), bridgeAddr + " on docker0 routes " + free.String()} {
				if !strings.Contains(out, w) {
					t.Errorf("agentctl status lacks %q:\n%s", w, out)
				}
			}
			if r, err := c1.Ping(f.ctx, c2.IP(), 3, 50*time.Millisecond); err != nil || r.Received != 0 {
				t.Errorf("ping %s behind the blackhole route: %+v, %v; want none answered", c2.IP(), r, err)
			}
			if n := strings.Count(logFrom(t, h1, off), `"another route takes part of a peer's subnet"`); n != 1 {
				t.Errorf("%d lines about the blackhole route, want 1", n)
			}

			for _, c := range [][]string{{"route", "del", block}, {"addr", "del", bridgeAddr, "dev", "docker0"}} {
				if _, err := h1.Exec(f.ctx, "ip", c...); err != nil {
					t.Fatal(err)
				}
			}
			f.eventually("both said gone", driftRepairWait, func() error {
				log := logFrom(t, h1, off)
				return errors.Join(
					logInOrder(log, shadowed, []string{`"a route that took part of a peer's subnet no longer does"`, `route="` + route + `"`}),
					logInOrder(log, stray, []string{`"an address of this host no longer routes another subnet of the cluster network"`, `iface="docker0"`}))
			})
			f.eventually("/status listing neither", driftRepairWait, func() error {
				if st := agentStatus(t, f, h1); len(st.ShadowingRoutes)+len(st.StrayAddresses)+st.ShadowingRoutesTotal+st.StrayAddressesTotal != 0 {
					return fmt.Errorf("/status shadowingRoutes %+v, strayAddresses %+v; want none", st.ShadowingRoutes, st.StrayAddresses)
				}
				return nil
			})
			if out := f.mustCtl(h1, "status", "--agent", "http://"+h1.HealthzAddr()); strings.Contains(out, "route in a peer's subnet") || strings.Contains(out, "stray address") {
				t.Errorf("agentctl status with both gone:\n%s", out)
			}
			f.pingAll([]*cluster.Container{c1, c2})
		})
	}
}
