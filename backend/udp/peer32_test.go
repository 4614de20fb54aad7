package udp

import (
	"net/netip"
	"testing"
)

// TestPeerHoldingOneAddress: a lease's subnet may be of any length up to
// /32 (the key 10.244.2.7-32 parses, and desired takes peers of every
// length inside the network). A /32 has no host part, so no broadcast
// address: its one address is a host's. Packets from it are accepted as
// that peer's, and a packet of ours to it that expires gets its ICMP
// error. Taking an all-ones host part of no bits for a broadcast address
// would drop both.
func TestPeerHoldingOneAddress(t *testing.T) {
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.7/32"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
	})
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	if _, v := tbl.accept(peer, ipPacket("10.244.2.7", "10.244.1.9", 17, 64, make([]byte, 8))); v != pass {
		t.Errorf("a packet from the /32 peer's address: %v, want it delivered", v)
	}

	w, dev := newTestTx(true)
	w.tbl.Store(tbl)
	if err := w.encap(tbl, w.load(vnetHdr{}, ipPacket("10.244.1.9", "10.244.2.7", 17, 1, make([]byte, 8)))); err != nil {
		t.Fatal(err)
	}
	if w.local[dropTTL] != 1 || len(dev.packets) != 1 {
		t.Errorf("a packet to the /32 peer with TTL 1: counts %v, %d ICMP errors; want one ttlExceeded and its error", w.local, len(dev.packets))
	}
}
