package e2e

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
)

// TestReleaseLeaseRemovesDatapath: a host is decommissioned (its agent
// stopped, then agentd --release-lease), and keeps nothing agentd made in
// its kernel: not the backend's device (flannel.1 with its address,
// neighbour and FDB entries; flannel0, whose descriptor keeper exits and
// frees port 8285), not a route of ours (proto 74: host-gw's to the
// peers), not our iptables chains (--ip-masq, forward rules); each removal
// is logged. A fresh agent then starts on the host as on a new one and
// carries traffic. Before, --release-lease deleted the lease and
// subnet.env only: the host kept routing to subnets the cluster may lease
// to new hosts, and the keeper kept port 8285.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agent stopped, --release-lease, fresh agent ── c1
//	               ├─ h2 198.18.0.2   agent runs throughout                       ── c1
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseRemovesDatapath(t *testing.T) {
	t.Parallel()
	iptablesLine := []string{`"deleted our iptables chains (AGENTD-*) and the jumps into them: the lease is released"`, `tables=["filter (`, `"nat (`}
	for _, tc := range []struct {
		name, backend, dev string
		// gone: h1's key is deleted before --release-lease, as when its
		// TTL ran out while the host was down.
		gone   bool
		logged [][]string // the lines of the removal but iptables', each by what it holds
	}{
		{"vxlan", "vxlan", "flannel.1", false, [][]string{{`"deleted our vxlan device, with its address, neighbour and FDB entries and routes: the lease is released"`, `device="flannel.1"`}}},
		{"vxlan-lease-gone", "vxlan", "flannel.1", true, [][]string{{`"deleted our vxlan device, with its address, neighbour and FDB entries and routes: the lease is released"`, `device="flannel.1"`}}},
		{"host-gw", "host-gw", "", false, [][]string{{`"deleted our routes to the peers' subnets: the lease is released"`, `routes=1`, ` via 198.18.0.2"]`}}},
		{"udp", "udp", "flannel0", false, [][]string{
			{`"deleted our udp backend's TUN device, with its address and route: the lease is released"`, `device="flannel0"`},
			{`"the udp backend's descriptor keeper let go of its device and its UDP port"`},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, hfConfig(tc.backend), "--ip-masq")
			h1, h2 := f.c.Host(1), f.c.Host(2)
			a1 := f.start(h1)
			f.start(h2)
			f.waitReady(h1, h2)

			if tc.dev != "" {
				if _, err := h1.LinkByName(tc.dev); err != nil {
					t.Fatalf("h1 has no %s while its agent runs: %v", tc.dev, err)
				}
			}
			// Both ready, h1 may have programmed its first snapshot
			// before h2 leased its subnet. udp routes the whole
			// network into flannel0, and no peer.
			want := hostSubnet(t, h2).String() + " "
			if tc.backend == "udp" {
				want = network + " "
			}
			f.eventually("h1's route of ours to "+want, 10*time.Second, func() error {
				if rs := ourRoutes(t, h1); !slices.ContainsFunc(rs, func(r string) bool { return strings.HasPrefix(r, want) }) {
					return fmt.Errorf("h1's routes of ours (proto 74): %q", rs)
				}
				return nil
			})
			if rs := ourRules(t, h1); len(rs) == 0 {
				t.Fatalf("h1 has no iptables rule of ours while its agent runs with --ip-masq")
			}
			if code, err := a1.Stop(); err != nil || code != 0 {
				t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
			}
			var keepers []int
			if tc.backend == "udp" {
				if keepers = keeperPids(t, h1); len(keepers) == 0 {
					t.Fatalf("h1: no descriptor keeper runs after the udp agent stopped")
				}
				if err := udpPortFree(h1); err == nil {
					t.Fatalf("h1: port 8285 is free while the keeper runs")
				}
			}

			released := `"lease released; subnet.env removed"`
			if tc.gone {
				if _, err := f.cli.Delete(f.ctx, prefix+"/subnets/"+subnet.MakeSubnetKey(hostSubnet(t, h1), netip.Prefix{})); err != nil {
					t.Fatal(err)
				}
				released = `"no lease of this host to release; subnet.env removed"`
			}
			off := logLen(t, h1)
			if code, err := f.start(h1, "--release-lease").Wait(f.ctx); err != nil || code != 0 {
				t.Fatalf("h1 --release-lease: exit %d, %v\n%s", code, err, logFrom(t, h1, off))
			}
			log := logFrom(t, h1, off)
			t.Logf("h1 --release-lease:\n%s", log)
			if tc.dev != "" {
				if _, err := h1.LinkByName(tc.dev); err == nil {
					t.Errorf("h1: %s is still there after --release-lease", tc.dev)
				}
			}
			if rs := ourRoutes(t, h1); len(rs) > 0 {
				t.Errorf("h1: routes of ours left after --release-lease:\n%s", strings.Join(rs, "\n"))
			}
			if rs := ourRules(t, h1); len(rs) > 0 {
				t.Errorf("h1: iptables rules of ours left after --release-lease:\n%s", strings.Join(rs, "\n"))
			}
			for _, want := range append(tc.logged, iptablesLine, []string{released}) {
				if ls := linesWith(log, want...); len(ls) != 1 {
					t.Errorf("h1: --release-lease did not log a line with %s once", strings.Join(want, " and "))
				}
			}
			if tc.backend == "udp" {
				if err := udpPortFree(h1); err != nil {
					t.Errorf("h1: port 8285 still taken after --release-lease: %v", err)
				}
				f.eventually("h1's descriptor keeper exits", 5*time.Second, func() error {
					for _, pid := range keepers {
						if running(pid) {
							return fmt.Errorf("the descriptor keeper (pid %d) still runs", pid)
						}
					}
					return nil
				})
			}

			// A fresh agent starts as on a new host: nothing left to
			// clean or to refuse, and traffic flows both ways.
			off = logLen(t, h1)
			f.start(h1)
			f.waitReady(h1)
			f.pingAll([]*cluster.Container{f.container(h1), f.container(h2)})
			for _, l := range strings.Split(logFrom(t, h1, off), "\n") {
				if strings.HasPrefix(l, "E") || strings.Contains(l, "leaving alone") || strings.Contains(l, `"deleted our`) {
					t.Errorf("h1's fresh agent logged: %s", l)
				}
			}
		})
	}
}

// ourRoutes are h's main-table routes with agentd's protocol (74).
func ourRoutes(t *testing.T, h *cluster.Host) []string {
	t.Helper()
	rs, err := h.Routes()
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, r := range rs {
		if strings.Contains(r, " proto 74") {
			ours = append(ours, r)
		}
	}
	return ours
}

// ourRules are the lines of h's iptables-save that name a chain of ours or
// carry our comment.
func ourRules(t *testing.T, h *cluster.Host) []string {
	t.Helper()
	out, err := h.Exec(t.Context(), "iptables-save")
	if err != nil {
		t.Fatalf("%s iptables-save: %v\n%s", h, err, out)
	}
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "AGENTD-") || strings.Contains(l, `"agentd `) {
			ours = append(ours, l)
		}
	}
	return ours
}
