package udp

import (
	"net/netip"
	"testing"
)

// TestAcceptDropsBroadcastSource: an inner source that is the broadcast
// address of the peer's subnet is a martian (RFC 1812 5.3.7) that a router
// does not forward: a pod answering it would answer a whole bridge. It is
// dropped as spoofed. The subnet's first address is the peer's flannel0
// address, the source of its ICMP errors, and stays accepted.
func TestAcceptDropsBroadcastSource(t *testing.T) {
	tbl := testTable()
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	for _, tc := range []struct {
		name string
		src  string
		want verdict
	}{
		{"the peer subnet's broadcast address", "10.244.2.255", dropSpoofed},
		{"the peer's device address", "10.244.2.0", pass},
		{"the peer's last host address", "10.244.2.254", pass},
	} {
		if _, v := tbl.accept(peer, ipPacket(tc.src, "10.244.1.9", 17, 64, make([]byte, 8))); v != tc.want {
			t.Errorf("from %s (%s): %v, want %v", tc.src, tc.name, v, tc.want)
		}
	}
}
