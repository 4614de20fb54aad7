package backend

import (
	"net/netip"
	"testing"
)

// TestSegmentRefuseNoOnLinkNetwork: on an interface whose only address was
// added with noprefixroute, and no scope-link route of the main table, a
// peer on that address's subnet is refused saying that the interface has no
// on-link network, and why. Before, it said "eth0 is attached to [] only",
// as seen on the namespace cluster with host-gw.
func TestSegmentRefuseNoOnLinkNetwork(t *testing.T) {
	s := &Segment{
		Iface: "eth0", IfaceIndex: 2,
		Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")},
		Local:   map[netip.Addr]string{netip.MustParseAddr("198.18.0.3"): "eth0"},
	}
	for _, tc := range []struct{ pub, want string }{
		{"198.18.0.1", "public IP 198.18.0.1 is not on-link: eth0 has no on-link network (its address in 198.18.0.0/24 was added with noprefixroute, and no scope-link route of the main table leads there)"},
		{"198.19.0.1", "public IP 198.19.0.1 is not on-link: eth0 has no on-link network"},
	} {
		if got, offLink := s.Refuse(netip.MustParseAddr(tc.pub)); got != tc.want || !offLink {
			t.Errorf("Refuse(%s) = %q, %v; want %q, true", tc.pub, got, offLink, tc.want)
		}
	}
}
