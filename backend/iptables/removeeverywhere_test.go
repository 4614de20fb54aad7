package iptables

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestRootRemoveEverywhere: RemoveEverywhere (agentd --release-lease)
// deletes our chains and jumps from both backends' tables, whichever
// backend the Manager writes to, leaves other software's rules, and names
// each table it deleted something from with its backend; run again, it
// finds nothing and names nothing.
func TestRootRemoveEverywhere(t *testing.T) {
	fam := rootFamilies[0]
	for _, tc := range []struct {
		left, now string
		want      []string
	}{
		{ModeLegacy, ModeNFT, []string{"filter (nf_tables)", "filter (legacy)", "nat (legacy)"}},
		{ModeNFT, ModeLegacy, []string{"filter (legacy)", "filter (nf_tables)", "nat (nf_tables)"}},
	} {
		t.Run("left in "+tc.left, func(t *testing.T) {
			ns := newNetns(t)
			inNetns(t, ns, fam.bin+"-"+tc.left, "-A", "FORWARD", "-s", fam.foreign, "-j", "DROP")
			left, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.left})
			if err != nil {
				t.Fatal(err)
			}
			now, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.now})
			if err != nil {
				t.Fatal(err)
			}
			network, subnet := netip.MustParsePrefix(fam.network), netip.MustParsePrefix(fam.subnet)
			mustReconcile(t, left, append(MasqRules(network, subnet, left.RandomFully()), ForwardRules(network)...), true)
			mustReconcile(t, now, ForwardRules(network), true)

			removed, err := now.RemoveEverywhere()
			if err != nil || !slices.Equal(removed, tc.want) {
				t.Errorf("RemoveEverywhere = %q, %v; want %q", removed, err, tc.want)
			}
			for _, mode := range []string{tc.left, tc.now} {
				for _, table := range []string{"nat", "filter", "mangle"} {
					if got := saved(t, ns, fam.bin+"-"+mode+"-save", table); strings.Contains(got, ChainPrefix) {
						t.Errorf("%s %s still holds our chains:\n%s", mode, table, got)
					}
				}
			}
			if got := saved(t, ns, fam.bin+"-"+tc.left+"-save", "filter"); !strings.Contains(got, "-A FORWARD -s "+fam.foreign+" -j DROP") {
				t.Errorf("other software's rule gone from %s:\n%s", tc.left, got)
			}
			if removed, err := now.RemoveEverywhere(); err != nil || len(removed) != 0 {
				t.Errorf("RemoveEverywhere again = %q, %v; want nothing removed", removed, err)
			}
		})
	}
}
