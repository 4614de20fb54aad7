package subnet

import (
	"net/netip"
	"testing"
)

// TestRoutableLeaseSaysOutsideTheNetwork: a lease whose subnet lies outside
// the network is said to be outside it, whatever its length; a subnet inside
// it of a length no host can have is said to be of the wrong length. Before,
// both read "is not a /18 to /30 of the network", so after a change of
// Network (agentctl config init --force, the agents' "skipping key that is
// not a usable lease", agentctl leases' "invalid:") every old /24 seemed to
// have a wrong length.
func TestRoutableLeaseSaysOutsideTheNetwork(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.244.128.0/17","EnableIPv6":true,"IPv6Network":"fc00::/48"}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		l    Lease
		want string
	}{
		{Lease{Subnet: netip.MustParsePrefix("10.244.7.0/24")}, "IPv4 subnet 10.244.7.0/24 is outside the network 10.244.128.0/17"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.128.0/18")}, "IPv4 subnet 10.244.128.0/18 is not a /19 to /30 of the network 10.244.128.0/17"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.130.0/31")}, "IPv4 subnet 10.244.130.0/31 is not a /19 to /30 of the network 10.244.128.0/17"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.130.0/24"), IPv6Subnet: netip.MustParsePrefix("fc00:1:0:5::/64")}, "IPv6 subnet fc00:1:0:5::/64 is outside the network fc00::/48"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.130.0/24"), IPv6Subnet: netip.MustParsePrefix("fc00:0:0:5::/64")}, ""},
		// Larger than the network and holding it whole (a key written by
		// hand, or left from a Network that was a part of it): since
		// d316d12 it read "is outside the network", as for a subnet
		// sharing no address with it.
		{Lease{Subnet: netip.MustParsePrefix("10.244.0.0/16")}, "IPv4 subnet 10.244.0.0/16 contains the whole network 10.244.128.0/17, not a /19 to /30 of it"},
		{Lease{Subnet: netip.MustParsePrefix("10.0.0.0/8")}, "IPv4 subnet 10.0.0.0/8 contains the whole network 10.244.128.0/17, not a /19 to /30 of it"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.128.0/17")}, "IPv4 subnet 10.244.128.0/17 is not a /19 to /30 of the network 10.244.128.0/17"},
		{Lease{Subnet: netip.MustParsePrefix("10.244.130.0/24"), IPv6Subnet: netip.MustParsePrefix("fc00::/32")}, "IPv6 subnet fc00::/32 contains the whole network fc00::/48, not a /50 to /126 of it"},
	} {
		err := c.RoutableLease(tc.l)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("lease %s&%s in 10.244.128.0/17&fc00::/48: %q, want %q", tc.l.Subnet, tc.l.IPv6Subnet, got, tc.want)
		}
	}
}
