package iptables

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestRootRemoveEverywhereGoesOn: when RemoveEverywhere (agentd
// --release-lease) cannot remove our chains from its own backend's tables
// (iptables-save fails there), it still removes them from the other
// backend's, names those tables, and returns the failure. Before, the
// first failure returned at once: the chains a run with the other
// --iptables-mode left went on masquerading and accepting, and a release
// run again, still failing first, never reached them.
func TestRootRemoveEverywhereGoesOn(t *testing.T) {
	fam := rootFamilies[0]
	for _, tc := range []struct {
		left, now string
		want      []string
	}{
		{ModeLegacy, ModeNFT, []string{"filter (legacy)", "nat (legacy)"}},
		{ModeNFT, ModeLegacy, []string{"filter (nf_tables)", "nat (nf_tables)"}},
	} {
		t.Run("left in "+tc.left, func(t *testing.T) {
			ns := newNetns(t)
			left, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.left})
			if err != nil {
				t.Fatal(err)
			}
			network, subnet := netip.MustParsePrefix(fam.network), netip.MustParsePrefix(fam.subnet)
			mustReconcile(t, left, append(MasqRules(network, subnet, left.RandomFully()), ForwardRules(network)...), true)
			now, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: tc.now})
			if err != nil {
				t.Fatal(err)
			}
			failure := errors.New("another program holds the xtables lock")
			now.run = &fake{saveErr: failure, saves: map[string]int{}}

			removed, err := now.RemoveEverywhere()
			if !errors.Is(err, failure) || !slices.Equal(removed, tc.want) {
				t.Errorf("RemoveEverywhere, its own backend failing = %q, %v; want %q and the failure", removed, err, tc.want)
			}
			for _, table := range []string{"nat", "filter"} {
				if got := saved(t, ns, fam.bin+"-"+tc.left+"-save", table); strings.Contains(got, ChainPrefix) {
					t.Errorf("%s %s still holds our chains:\n%s", tc.left, table, got)
				}
			}
		})
	}
}
