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

// TestStrayBridgeAddressSaid: on h1, a docker0 left at another subnet of
// the cluster network (dockerd kept the old subnet's .1 after the lease
// went, with a daemon.json or drop-in lacking subnet.env's --bip) makes the
// kernel route that subnet to docker0. Left at a subnet no host holds, it
// took nothing anyone could see and, before 2026-12-07, nothing was said;
// left at h2's subnet, h1 skips h2 (its route would replace the kernel's),
// deletes its route to h2 once and programs nothing more (no fight with the
// kernel), and the containers of h1 and h2 reach each other in neither
// direction (h1's replies go to docker0 too). Both are now logged within
// driftRepairWithin, naming docker0, the address and h1's subnet, and once
// each when the address is gone; h2 is then programmed again and reached.
//
//	h1 (docker0 10.244.B.1/24) ── c1 ──✗──> h2's c1 10.244.B.2
func TestStrayBridgeAddressSaid(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw"} {
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
			for _, c := range [][]string{{"link", "add", "docker0", "type", "bridge"}, {"link", "set", "docker0", "up"}} {
				if _, err := h1.Exec(f.ctx, "ip", c...); err != nil {
					t.Fatal(err)
				}
			}
			said := func(sn netip.Prefix) []string {
				return []string{`"an address of this host routes another subnet of the cluster network to its interface"`, `iface="docker0"`,
					`address="` + netip.PrefixFrom(sn.Addr().Next(), 24).String() + `"`, `route="` + sn.String() + `"`, `ownSubnet="` + sn1.String() + `"`}
			}
			gone := func(sn netip.Prefix) []string {
				return []string{`"an address of this host no longer routes another subnet of the cluster network"`, `iface="docker0"`, `route="` + sn.String() + `"`}
			}
			addr := func(op string, sn netip.Prefix) {
				t.Helper()
				if _, err := h1.Exec(f.ctx, "ip", "addr", op, netip.PrefixFrom(sn.Addr().Next(), 24).String(), "dev", "docker0"); err != nil {
					t.Fatal(err)
				}
			}

			// A subnet no host holds: only the log changes.
			before, err := datapathState(backend, h1)
			if err != nil {
				t.Fatal(err)
			}
			off := logLen(t, h1)
			start := time.Now()
			addr("add", free)
			f.eventually("docker0's address in a free subnet logged", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), said(free))
			})
			took := time.Since(start)
			if took > driftRepairWithin {
				t.Errorf("docker0's address logged %v after it was added; want within %v", took.Round(time.Millisecond), driftRepairWithin)
			}
			t.Logf("docker0's address in a free subnet logged within %v of the command's start", took.Round(time.Millisecond))
			kernelRoute := func(sn netip.Prefix) string {
				return fmt.Sprintf("%s dev docker0 proto kernel scope link src %s", sn, sn.Addr().Next())
			}
			now, err := datapathState(backend, h1)
			if err != nil {
				t.Fatal(err)
			}
			if lines := strings.Split(now, "\n"); !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, kernelRoute(free)) }) ||
				strings.Join(slices.DeleteFunc(lines, func(l string) bool { return strings.HasPrefix(l, kernelRoute(free)) }), "\n") != before {
				t.Errorf("h1's datapath with docker0's address:\n%s\nwant the one before and %q:\n%s", now, kernelRoute(free), before)
			}
			f.pingAll([]*cluster.Container{c1, c2})
			addr("del", free)
			f.eventually("docker0's address in a free subnet said gone", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), said(free), gone(free))
			})

			// h2's subnet: h2 is skipped and its containers cut off from h1's.
			off = logLen(t, h1)
			addr("add", sn2)
			skipped := []string{`"peer not programmed"`, `reason="subnet ` + sn2.String() + ` holds ` + sn2.Addr().Next().String() + `, an address of this host (docker0)"`}
			f.eventually("docker0's address in h2's subnet logged", driftRepairWait, func() error {
				log := logFrom(t, h1, off)
				return errors.Join(logInOrder(log, said(sn2)), logInOrder(log, skipped))
			})
			f.eventually("h1's route to h2's subnet the kernel's alone", driftRepairWait, func() error {
				routes, err := h1.Routes()
				if err != nil {
					return err
				}
				to := slices.DeleteFunc(routes, func(l string) bool { return !strings.HasPrefix(l, sn2.String()+" ") })
				if len(to) != 1 || !strings.HasPrefix(to[0], kernelRoute(sn2)) {
					return fmt.Errorf("routes to %s: %q, want docker0's alone", sn2, to)
				}
				return nil
			})
			// /status takes the pass's result once the pass is over.
			f.eventually("/status peersSkipped naming docker0", driftRepairWait, func() error {
				st := agentStatus(t, f, h1)
				if !slices.ContainsFunc(st.PeersSkipped, func(p agent.SkippedPeer) bool { return strings.Contains(p.Reason, "(docker0)") }) {
					return fmt.Errorf("/status peersSkipped %+v, want h2's lease with docker0 named", st.PeersSkipped)
				}
				return nil
			})
			for _, p := range [][2]*cluster.Container{{c1, c2}, {c2, c1}} {
				if r, err := p[0].Ping(f.ctx, p[1].IP(), 3, 50*time.Millisecond); err != nil || r.Received != 0 {
					t.Errorf("ping %s -> %s with h2's subnet on h1's docker0: %+v, %v; want none answered", p[0], p[1], r, err)
				}
			}
			log := logFrom(t, h1, off)
			if n := len(linesWith(log, `"kernel delete"`, ` object="route `+sn2.String())); n != 1 {
				t.Errorf("%d deletes of h1's route to %s, want 1:\n%s", n, sn2, log)
			}
			if n := len(linesWith(log, `"kernel add"`, ` object="route `+sn2.String())); n != 0 {
				t.Errorf("%d adds of h1's route to %s while docker0 holds its address, want none:\n%s", n, sn2, log)
			}
			addr("del", sn2)
			f.eventually("docker0's address in h2's subnet said gone", driftRepairWait, func() error {
				return logInOrder(logFrom(t, h1, off), said(sn2), gone(sn2))
			})
			f.pingAll([]*cluster.Container{c1, c2})
			if n := strings.Count(logFrom(t, h1, 0), `"an address of this host routes another subnet of the cluster network to its interface"`); n != 2 {
				t.Errorf("%d lines about docker0's addresses, want 2", n)
			}
		})
	}
}
