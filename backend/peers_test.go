package backend

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// TestOnePerSubnet: of the leases sharing an IPv4 subnet the one with the
// highest ModRevision is kept, the smaller key on a tie, whatever their
// order; the rest keep their order, and each loser is skipped naming the
// winner.
func TestOnePerSubnet(t *testing.T) {
	l := func(sn, sn6 string, rev int64) subnet.Lease {
		p := subnet.Lease{Subnet: netip.MustParsePrefix(sn), ModRevision: rev}
		if sn6 != "" {
			p.IPv6Subnet = netip.MustParsePrefix(sn6)
		}
		return p
	}
	keys := func(ls []subnet.Lease) string {
		var ks []string
		for _, p := range ls {
			ks = append(ks, p.Key())
		}
		return strings.Join(ks, " ")
	}
	for _, tc := range []struct {
		name        string
		peers       []subnet.Lease
		kept, skips string
	}{
		{"no duplicates", []subnet.Lease{l("10.244.3.0/24", "", 1), l("10.244.2.0/24", "", 2)}, "10.244.3.0-24 10.244.2.0-24", ""},
		{"newer dual-stack key", []subnet.Lease{l("10.244.2.0/24", "", 5), l("10.244.2.0/24", "fd00::/64", 9), l("10.244.3.0/24", "", 1)},
			"10.244.2.0-24&fd00::-64 10.244.3.0-24",
			"10.244.2.0-24: superseded by the lease 10.244.2.0-24&fd00::-64 for the same IPv4 subnet (the one written last wins)"},
		{"newer plain key, reversed order", []subnet.Lease{l("10.244.2.0/24", "fd00::/64", 5), l("10.244.2.0/24", "", 9)},
			"10.244.2.0-24",
			"10.244.2.0-24&fd00::-64: superseded by the lease 10.244.2.0-24 for the same IPv4 subnet (the one written last wins)"},
		{"tie: the smaller key", []subnet.Lease{l("10.244.2.0/24", "fd00::/64", 7), l("10.244.2.0/24", "fd00:1::/64", 7), l("10.244.2.0/24", "", 7)},
			"10.244.2.0-24",
			"10.244.2.0-24&fd00:1::-64: superseded by the lease 10.244.2.0-24 for the same IPv4 subnet (the one written last wins)\n" +
				"10.244.2.0-24&fd00::-64: superseded by the lease 10.244.2.0-24 for the same IPv4 subnet (the one written last wins)"},
		{"no IPv4 subnet is left to the backend", []subnet.Lease{{}, {}, l("10.244.2.0/24", "", 1)}, "invalid IP--1 invalid IP--1 10.244.2.0-24", ""},
	} {
		skips := NewSkipLog(logr.Discard())
		got := OnePerSubnet(tc.peers, skips)
		if k := keys(got); k != tc.kept {
			t.Errorf("%s: kept %q, want %q", tc.name, k, tc.kept)
		}
		var skipped []string
		for k, why := range skips.round {
			skipped = append(skipped, k+": "+why)
		}
		slices.Sort(skipped)
		if s := strings.Join(skipped, "\n"); s != tc.skips {
			t.Errorf("%s: skipped\n%s\nwant\n%s", tc.name, s, tc.skips)
		}
	}
}
