package udp

import (
	"encoding/binary"
	"testing"
	"time"
)

// TestICMPErrorQuotesFirstSegment: the ICMP error about a TSO or USO packet
// that cannot be forwarded (TTL 1; a subnet nobody holds) quotes the
// packet's first segment, as a router forwarding the segments would have
// dropped and quoted it: an IPv4 header with that segment's total length
// and a header checksum that verifies, and its TCP header (the sequence
// number of the first, FIN and PSH kept for the last) or its UDP header
// (the UDP length of one datagram), with the checksum of that segment.
// Before, the quote was the packet as the device handed it over: a total
// length of the whole (2040 bytes; 2028 and a UDP length of 2008 for
// USO), its TCP or UDP checksum field holding the pseudo header's sum.
func TestICMPErrorQuotesFirstSegment(t *testing.T) {
	const mss, n = 400, 5
	// As the device hands them over: the checksum field holding the
	// pseudo header's sum, total length (and UDP length) of the whole.
	tso := func(dst string, ttl uint8) []byte {
		b := withTTL(tcpPacket("10.244.1.5", dst, 100, 5000, tcpACK|tcpPSH|tcpFIN, payload(0, n*mss)), ttl)
		binary.BigEndian.PutUint16(b[36:], pseudoSum(b, protoTCP, 20))
		return b
	}
	uso := func(dst string, ttl uint8) []byte {
		return withTTL(usoPacket("10.244.1.5", dst, 100, false, payload(0, n*mss)), ttl)
	}
	tsoHdr := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: 40, gsoSize: mss, csumStart: 20, csumOffset: tcpCsumOffset}
	// The first segments, as the kernel would have cut them: every
	// segment is quoted whole (440 and 428 bytes).
	for _, tc := range []struct {
		name string
		h    vnetHdr
		pkt  []byte
		typ  uint8
		want []byte
	}{
		{"TSO, TTL 1", tsoHdr, tso("10.244.2.5", 1), icmpTimeExceeded,
			withTTL(tcpPacket("10.244.1.5", "10.244.2.5", 100, 5000, tcpACK, payload(0, mss)), 1)},
		{"TSO, no route", tsoHdr, tso("10.244.77.5", 64), icmpDestUnreachable,
			tcpPacket("10.244.1.5", "10.244.77.5", 100, 5000, tcpACK, payload(0, mss))},
		{"USO, TTL 1", usoHdr(mss), uso("10.244.2.5", 1), icmpTimeExceeded,
			refUSO(uso("10.244.2.5", 1), mss)[0]},
		{"USO, no route", usoHdr(mss), uso("10.244.77.5", 64), icmpDestUnreachable,
			refUSO(uso("10.244.77.5", 64), mss)[0]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(true)
			if err := w.encap(w.tbl.Load(), w.load(tc.h, tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if len(dev.packets) != 1 {
				t.Fatalf("%d ICMP errors written back, want 1", len(dev.packets))
			}
			e := dev.packets[0]
			if len(e) < 28 || e[20] != tc.typ || checksum(e[20:]) != 0 {
				t.Fatalf("ICMP error % x: want type %d, checksum valid", e[:min(len(e), 28)], tc.typ)
			}
			quote := e[28:]
			if len(quote) < 28 {
				t.Fatalf("quote of %d bytes", len(quote))
			}
			if tl := int(binary.BigEndian.Uint16(quote[2:4])); tl != len(tc.want) || checksum(quote[:20]) != 0 {
				t.Errorf("quoted header: total length %d, header checksum %#04x (sums to %#04x); want %d and a valid one",
					tl, binary.BigEndian.Uint16(quote[10:12]), checksum(quote[:20]), len(tc.want))
			}
			if tc.pkt[9] == protoUDP {
				if ul := binary.BigEndian.Uint16(quote[24:26]); ul != udpHeaderLen+mss {
					t.Errorf("quoted UDP length %d, want %d", ul, udpHeaderLen+mss)
				}
			}
			if l := min(len(tc.want), icmpErrorMaxLen-28); len(quote) != l || string(quote) != string(tc.want[:l]) {
				t.Errorf("quote (%d bytes)\n % x\nwant the first segment's first %d bytes\n % x", len(quote), quote[:min(len(quote), 40)], l, tc.want[:min(l, 40)])
			}
		})
	}
}

// withTTL sets the TTL of the IPv4 packet b (a header of 20 bytes) and its
// header checksum, and returns b.
func withTTL(b []byte, ttl uint8) []byte {
	b[8] = ttl
	binary.BigEndian.PutUint16(b[10:], 0)
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	return b
}

// FuzzICMPErrorAboutGSO feeds arbitrary TSO and USO packets for a subnet
// nobody holds or with TTL 1 to encap. An ICMP error about one is a
// well-formed error whose quote is the packet's first segment: its total
// length that segment's (headers and at most one segment's payload), its
// header checksum valid, the packet's addresses and ports, and no more of
// it than the error's 576 bytes hold.
func FuzzICMPErrorAboutGSO(f *testing.F) {
	f.Add(false, uint16(400), tcpPacket("10.244.1.5", "10.244.77.5", 1, 1, tcpACK|tcpPSH, payload(0, 2000)))
	f.Add(false, uint16(1), withTTL(tcpPacket("10.244.1.5", "10.244.2.5", 1, 1, tcpACK, payload(0, 30)), 1))
	f.Add(true, uint16(1200), usoPacket("10.244.1.5", "10.244.77.5", 1, false, payload(0, 3000)))
	f.Add(true, uint16(9), withTTL(usoPacket("10.244.1.5", "10.244.2.5", 1, true, payload(0, 100)), 1))
	w, dev := newTestTx(true)
	now := time.Unix(1000, 0)
	w.now = func() time.Time { now = now.Add(time.Second); return now } // never rate limited
	f.Fuzz(func(t *testing.T, udp bool, mss uint16, pkt []byte) {
		dev.packets = dev.packets[:0]
		h := vnetHdr{gsoType: gsoTCPv4, gsoSize: mss}
		if udp {
			h.gsoType = gsoUDPL4
		}
		gp, ok := parseGSO(pkt, h)
		if err := w.encap(w.tbl.Load(), w.load(h, pkt)); err != nil {
			t.Fatal(err)
		}
		if len(dev.packets) == 0 {
			return
		}
		if !ok {
			t.Fatalf("an ICMP error about % x, which parseGSO refuses", pkt)
		}
		e := dev.packets[0]
		eh, v := parseIPv4(e)
		if len(dev.packets) != 1 || v != pass || eh.tlen != len(e) || len(e) > icmpErrorMaxLen || checksum(e[:20]) != 0 || checksum(e[20:]) != 0 {
			t.Fatalf("%d errors, the first % x (%v)", len(dev.packets), e, v)
		}
		quote := e[28:]
		want := min(len(pkt), gp.hdrLen+gp.mss)
		if len(quote) != min(want, icmpErrorMaxLen-28) || int(binary.BigEndian.Uint16(quote[2:4])) != want ||
			checksum(quote[:gp.iphLen]) != 0 || string(quote[12:20]) != string(pkt[12:20]) ||
			string(quote[gp.iphLen:gp.iphLen+4]) != string(pkt[gp.iphLen:gp.iphLen+4]) {
			t.Fatalf("about % x (segments of %d): quote % x, want the first segment of %d bytes", pkt, mss, quote, want)
		}
	})
}
