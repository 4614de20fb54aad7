package udp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// TestAcceptICMPErrorQuoteLength: an ICMP error from a peer is judged by
// the destination its quote names, and the quote is what lies inside the
// packet's Total Length. A quote that holds the quoted header's destination
// and nothing more (28 bytes of ICMP message) is judged by it; one a byte
// shorter is refused, not read past its end; and bytes after the Total
// Length (a datagram padded past the packet it carries) are no part of the
// quote, so a first fragment whose quote lies in the next one is refused
// even when they would name a destination the peer holds.
func TestAcceptICMPErrorQuoteLength(t *testing.T) {
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	// cut is the error about a packet to quotedDst, its ICMP message cut
	// to n bytes (the Total Length says so), then pad bytes.
	cut := func(quotedDst string, n int, pad []byte) []byte {
		full := icmpAbout("10.244.2.5", "10.244.1.9", 3, 3, "10.244.1.9:4000", quotedDst)
		b := bytes.Clone(full[:20+n])
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		binary.BigEndian.PutUint16(b[10:12], 0)
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
		return append(b, pad...)
	}
	// The next 36 bytes of the error about a packet to the peer's pod: what
	// a padded datagram would carry after a cut one.
	tail := icmpAbout("10.244.2.5", "10.244.1.9", 3, 3, "10.244.1.9:4000", "10.244.2.5:53")[20:]
	for _, tc := range []struct {
		name string
		pkt  []byte
		want verdict
		len  int // of the packet accepted
	}{
		{"the quoted header alone, about a packet to the peer", cut("10.244.2.5:53", 28, nil), pass, 48},
		{"the quoted header alone, about another peer's pod", cut("10.244.3.5:53", 28, nil), dropSpoofed, 0},
		{"a byte short of the quoted destination", cut("10.244.2.5:53", 27, nil), dropSpoofed, 0},
		{"no quote, and padding that would name the peer's pod", cut("10.244.3.5:53", 8, tail[8:]), dropSpoofed, 0},
		{"the quoted header alone, then padding", cut("10.244.2.5:53", 28, make([]byte, 20)), pass, 48},
	} {
		got, v := tbl.accept(peer, tc.pkt)
		if v != tc.want || len(got) != tc.len {
			t.Errorf("%s: %v, %d bytes; want %v, %d", tc.name, v, len(got), tc.want, tc.len)
		}
	}
}

// TestDecTTLAsRecomputed: the checksum decTTL leaves is the one a full
// recomputation gives, byte for byte, as the kernel's ip_decrease_ttl
// leaves it: also where the sum wraps to zero, where 0x0000 and 0xffff
// would both verify but only 0x0000 is what a recomputation writes.
func TestDecTTLAsRecomputed(t *testing.T) {
	b := ipPacket("10.244.1.2", "10.244.2.3", 17, 64, nil)
	wrapped := false
	for id := range 1 << 16 {
		binary.BigEndian.PutUint16(b[4:6], uint16(id))
		b[8] = 64
		binary.BigEndian.PutUint16(b[10:12], 0)
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
		wrapped = wrapped || binary.BigEndian.Uint16(b[10:12]) == 0xfeff
		decTTL(b)
		got := binary.BigEndian.Uint16(b[10:12])
		binary.BigEndian.PutUint16(b[10:12], 0)
		if want := checksum(b[:20]); got != want {
			t.Fatalf("id %#04x: checksum %#04x after the TTL's decrement, a recomputation gives %#04x", id, got, want)
		}
	}
	if !wrapped {
		t.Fatal("no identification gave the checksum 0xfeff, whose increment wraps")
	}
}

// TestAcceptICMPNeitherErrorNorQuery: an ICMP message of a type that is
// neither one of the errors Linux hands to a socket nor a query (a router
// advertisement, an extended echo request of RFC 8335, a type unassigned)
// speaks about no packet of ours: it is not judged by a quote, which it
// does not carry, and comes in like a query.
func TestAcceptICMPNeitherErrorNorQuery(t *testing.T) {
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
	})
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	for _, typ := range []uint8{9, 10, 42, 200} {
		msg := append([]byte{typ}, make([]byte, 35)...)
		if _, v := tbl.accept(peer, ipPacket("10.244.2.5", "10.244.1.9", protoICMP, 64, msg)); v != pass {
			t.Errorf("ICMP type %d from the peer's pod: %v, want it delivered", typ, v)
		}
	}
}
