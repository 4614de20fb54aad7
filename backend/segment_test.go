package backend

import (
	"net/netip"
	"slices"
	"testing"
)

// TestSegmentRefuse checks the gateway rules without a kernel: the segment
// as read from a /24 address, a /31 point-to-point one and a scope-link
// route for 198.19.4.0/24 (whose first and last addresses are no network or
// broadcast address: no address of ours makes them so).
func TestSegmentRefuse(t *testing.T) {
	subnets := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.19.0.0/31")}
	s := &Segment{
		Iface: "ext0", IfaceIndex: 3,
		OnLink:  append(slices.Clone(subnets), netip.MustParsePrefix("198.19.4.0/24")),
		Subnets: subnets,
		Local:   map[netip.Addr]string{netip.MustParseAddr("198.18.0.1"): "ext0", netip.MustParseAddr("198.19.7.7"): "cni0"},
	}
	for _, tc := range []struct {
		pub, want string
		offLink   bool
	}{
		{"198.18.0.2", "", false},
		{"198.18.0.254", "", false},
		{"198.19.0.0", "", false}, // a /31 has no network address
		{"198.19.0.1", "", false},
		{"198.19.4.0", "", false}, // on-link by the route only
		{"198.19.4.255", "", false},
		{"198.18.0.0", "public IP 198.18.0.0 is the network address of 198.18.0.0/24", false},
		{"198.18.0.255", "public IP 198.18.0.255 is the broadcast address of 198.18.0.0/24", false},
		{"198.18.0.1", "public IP 198.18.0.1 is an address of this host (ext0)", false},
		{"198.19.7.7", "public IP 198.19.7.7 is an address of this host (cni0)", false},
		{"198.19.0.2", "public IP 198.19.0.2 is not on-link: ext0 is attached to [198.18.0.0/24 198.19.0.0/31 198.19.4.0/24] only", true},
		{"224.0.0.1", "public IP 224.0.0.1 is a multicast address", false},
		{"255.255.255.255", "public IP 255.255.255.255 is the limited broadcast address", false},
		{"127.0.0.53", "public IP 127.0.0.53 is a loopback address", false},
		{"0.0.0.0", "public IP 0.0.0.0 is unspecified", false},
	} {
		if got, offLink := s.Refuse(netip.MustParseAddr(tc.pub)); got != tc.want || offLink != tc.offLink {
			t.Errorf("Refuse(%s) = %q, %v; want %q, %v", tc.pub, got, offLink, tc.want, tc.offLink)
		}
	}
	for p, want := range map[string]string{"198.18.0.0/24": "198.18.0.255", "198.18.0.128/25": "198.18.0.255", "198.18.0.0/23": "198.18.1.255", "0.0.0.0/0": "255.255.255.255", "198.18.0.7/32": "198.18.0.7"} {
		if got := broadcast(netip.MustParsePrefix(p)); got.String() != want {
			t.Errorf("broadcast(%s) = %s, want %s", p, got, want)
		}
	}
}
