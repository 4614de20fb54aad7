package backend

import (
	"net/netip"
	"testing"
)

// TestRefuseHostAddressClasses: which IPv4 address blocks can be another
// host's public IP, for every backend alike (vxlan, host-gw and udp all ask
// RefuseHost). 0.0.0.0/8 names this network and is a source only (RFC
// 1122), so no peer can be reached there; udp alone refused it, vxlan
// programmed VXLAN to it. Class E (240.0.0.0/4), link-local and shared
// (100.64.0.0/10) addresses route on Linux like any other and some clouds
// number hosts in them: udp alone refused class E.
func TestRefuseHostAddressClasses(t *testing.T) {
	s := &Segment{Iface: "ext0", Local: map[netip.Addr]string{}}
	for _, tc := range []struct{ pub, want string }{
		{"0.1.2.3", `public IP 0.1.2.3 lies in 0.0.0.0/8, "this network", a source address only`},
		{"0.255.255.255", `public IP 0.255.255.255 lies in 0.0.0.0/8, "this network", a source address only`},
		{"0.0.0.0", "public IP 0.0.0.0 is unspecified"},
		{"240.0.0.1", ""},
		{"255.255.255.254", ""},
		{"169.254.7.8", ""},
		{"100.64.0.1", ""},
		{"1.0.0.1", ""},
	} {
		if got := s.RefuseHost(netip.MustParseAddr(tc.pub)); got != tc.want {
			t.Errorf("RefuseHost(%s) = %q, want %q", tc.pub, got, tc.want)
		}
	}
}
