package iptables

import (
	"net/netip"
	"strings"
	"testing"
)

// TestRootRemoveFromOtherBackend: a Manager of one backend deletes our
// chains and jumps from the other's tables, and nothing else there; in an
// empty namespace it loads no legacy table (the hooks of a loaded one see
// every packet). agent's TestIPTablesOtherBackendLeftovers runs it through
// the reconcile loop.
func TestRootRemoveFromOtherBackend(t *testing.T) {
	for _, fam := range rootFamilies {
		t.Run(fam.family.String(), func(t *testing.T) {
			for _, tc := range []struct{ left, now string }{{ModeLegacy, ModeNFT}, {ModeNFT, ModeLegacy}} {
				ns := newNetns(t)
				leftSave := fam.bin + "-" + tc.left + "-save"
				now, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.now})
				if err != nil {
					t.Fatal(err)
				}
				if err := now.RemoveFromOtherBackend(); err != nil {
					t.Fatalf("nothing anywhere, %s: %v", tc.now, err)
				}
				if got := inNetns(t, ns, "cat", "/proc/net/"+map[Family]string{IPv4: "ip", IPv6: "ip6"}[fam.family]+"_tables_names"); got != "" {
					t.Errorf("nothing anywhere, %s: legacy tables loaded: %q", tc.now, got)
				}

				inNetns(t, ns, fam.bin+"-"+tc.left, "-A", "FORWARD", "-s", fam.foreign, "-j", "DROP")
				left, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.left})
				if err != nil {
					t.Fatal(err)
				}
				network, subnet := netip.MustParsePrefix(fam.network), netip.MustParsePrefix(fam.subnet)
				mustReconcile(t, left, append(MasqRules(network, subnet, left.RandomFully()), ForwardRules(network)...), true)
				mustReconcile(t, now, ForwardRules(network), true)
				if err := now.RemoveFromOtherBackend(); err != nil {
					t.Fatalf("left in %s: %v", tc.left, err)
				}
				for _, table := range []string{"nat", "filter"} {
					if got := saved(t, ns, leftSave, table); strings.Contains(got, ChainPrefix) {
						t.Errorf("left in %s: %s still holds our chains:\n%s", tc.left, table, got)
					}
				}
				if got := saved(t, ns, leftSave, "filter"); !strings.Contains(got, "-A FORWARD -s "+fam.foreign+" -j DROP") {
					t.Errorf("left in %s: other software's rule gone:\n%s", tc.left, got)
				}
				mustReconcile(t, now, ForwardRules(network), false)
			}
		})
	}
}
