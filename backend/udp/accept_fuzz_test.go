package udp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
)

// acceptPeers are the peers of FuzzAccept's table: public IP to subnets.
var acceptPeers = map[netip.Addr][]netip.Prefix{
	netip.MustParseAddr("198.18.0.2"): {netip.MustParsePrefix("10.244.2.0/24"), netip.MustParsePrefix("10.244.4.0/25")},
	netip.MustParseAddr("198.18.0.3"): {netip.MustParsePrefix("10.244.3.0/24")},
}

// acceptOwn is FuzzAccept's own subnet.
var acceptOwn = netip.MustParsePrefix("10.244.1.0/24")

// fuzzAddr picks an address for FuzzAccept by sel from the ones its
// decision turns on, the host part (or all of it) taken from raw: one of
// our subnet, of either of one peer's subnets (the second a /25, so that
// half of its hosts lie outside it), of the other peer's, outer (the
// datagram's source), either peer's public IP, the limited broadcast
// address, or raw itself.
func fuzzAddr(sel uint8, raw uint32, outer netip.Addr) netip.Addr {
	host := byte(raw)
	switch sel % 8 {
	case 1:
		return netip.AddrFrom4([4]byte{10, 244, 1, host})
	case 2:
		return netip.AddrFrom4([4]byte{10, 244, 2, host})
	case 3:
		return netip.AddrFrom4([4]byte{10, 244, 4, host})
	case 4:
		return netip.AddrFrom4([4]byte{10, 244, 3, host})
	case 5:
		return outer
	case 6:
		return netip.AddrFrom4([4]byte{198, 18, 0, 3 - host%2})
	case 7:
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	return netip.AddrFrom4([4]byte{byte(raw >> 24), byte(raw >> 16), byte(raw >> 8), host})
}

// broadcastOf is the last address of p, its broadcast address, or invalid
// for a /32, which has none.
func broadcastOf(p netip.Prefix) netip.Addr {
	if p.Bits() == 32 {
		return netip.Addr{}
	}
	a := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	v := binary.BigEndian.Uint32(a[:]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// wantAccept is accept's decision stated plainly, with netip, for a packet
// b that parses (its header fields given) from outer: the rules of
// accept's and quotesPacketTo's comments, one after the other.
func wantAccept(outer netip.Addr, b []byte, hlen, tlen int, src, dst netip.Addr, proto uint8, frag uint16) verdict {
	subnets, known := acceptPeers[outer]
	switch {
	case !known:
		return dropUnknownPeer
	case checksum(b[:hlen]) != 0:
		return dropBadChecksum
	}
	inside := src == outer
	for _, s := range subnets {
		if s.Contains(src) && src != broadcastOf(s) {
			inside = true
		}
	}
	if !inside {
		return dropSpoofed
	}
	if !acceptOwn.Contains(dst) || dst == broadcastOf(acceptOwn) {
		return dropNotOurs
	}
	icmp := b[hlen:tlen]
	if proto != protoICMP || frag&0x1fff != 0 || len(icmp) == 0 {
		return pass
	}
	switch icmp[0] {
	case 3, 4, 5, 11, 12: // errors: unreachable, source quench, redirect, time exceeded, parameter problem
	default:
		return pass
	}
	// The quoted packet's destination: ICMP header (8 bytes), then the
	// quoted IPv4 header's bytes 16 to 19.
	if len(icmp) < 8+20 {
		return dropSpoofed
	}
	quoted := netip.AddrFrom4([4]byte(icmp[24:28]))
	if quoted == outer {
		return pass
	}
	for _, s := range subnets {
		if s.Contains(quoted) {
			return pass
		}
	}
	return dropSpoofed
}

// FuzzAccept: a datagram's packet from a peer, the two peers' public IPs,
// a stranger or any address, with any inner source and destination (in
// our subnet, either peer's, at a subnet's broadcast address, the peer's
// own address), any protocol, fragment field and options, ICMP messages of
// any type and length quoting a packet to any of those addresses, a header
// checksum that verifies or not, and bytes past its Total Length, is
// accepted or dropped exactly as wantAccept, the rules written out with
// netip, says. An accepted packet is the input cut to its Total Length, in
// place; accept changes no byte of it. Built from fields rather than raw
// bytes, so that most inputs have a header checksum that verifies and
// reach the decisions after it, which random bytes almost never do
// (FuzzParseIPv4 feeds accept those).
func FuzzAccept(f *testing.F) {
	// outerSel, srcSel, dstSel, quotedSel: see fuzzAddr (outerSel: 0 and 1
	// the peers, 2 a stranger, else raw); icmpType; icmpLen (bytes of ICMP
	// message, from the header's end to the Total Length); optWords;
	// frag (bytes 6 and 7: flags and offset); pad (bytes past the Total
	// Length); badSum; raw values.
	type seed struct {
		outerSel, srcSel, dstSel, quotedSel, proto, icmpType, icmpLen, optWords, pad uint8
		frag                                                                         uint16
		badSum                                                                       bool
	}
	for _, s := range []seed{
		{0, 2, 1, 2, protoICMP, 3, 56, 0, 0, 0, false},          // port unreachable about a packet to the peer's pod: pass
		{0, 2, 1, 4, protoICMP, 3, 56, 0, 0, 0, false},          // about a packet to the other peer's pod: spoofed
		{0, 2, 1, 1, protoICMP, 11, 28, 0, 0, 0, false},         // time exceeded about our own subnet: spoofed
		{0, 2, 1, 5, protoICMP, 3, 28, 0, 0, 0x4000, false},     // about the peer's node, DF set: pass
		{0, 2, 1, 2, protoICMP, 3, 27, 0, 0, 0, false},          // quote too short: spoofed
		{0, 2, 1, 4, protoICMP, 3, 56, 0, 0, 0x0005, false},     // a later fragment: pass
		{0, 2, 1, 4, protoICMP, 8, 12, 0, 0, 0, false},          // an echo request: pass
		{0, 2, 1, 4, protoICMP, 3, 0, 0, 0, 0, false},           // no ICMP header: pass
		{0, 5, 1, 6, protoICMP, 5, 40, 3, 4, 0x2000, false},     // options, padding, MF
		{1, 4, 1, 4, 17, 0, 8, 0, 0, 0, false},                  // UDP from the other peer: pass
		{0, 3, 1, 0, 6, 0, 20, 0, 0, 0, false},                  // TCP from the /25: pass at hosts below 128
		{0, 2, 1, 2, 6, 0, 20, 0, 0, 0, true},                   // bad checksum
		{2, 2, 1, 2, 6, 0, 20, 0, 0, 0, false},                  // a stranger
		{0, 2, 7, 2, 17, 0, 8, 0, 0, 0, false},                  // to the limited broadcast address
		{3, 0, 0, 0, protoICMP, 12, 255, 10, 15, 0xffff, false}, // raw addresses, longest header
	} {
		f.Add(s.outerSel, s.srcSel, s.dstSel, s.quotedSel, s.proto, s.icmpType, s.icmpLen, s.optWords, s.pad, s.frag, s.badSum,
			uint32(0x0af40209), uint32(0x0af40107), uint32(0x0af40205), uint32(0xc6120002))
	}
	tbl := newTable(acceptOwn, []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.4.0/25"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
	f.Fuzz(func(t *testing.T, outerSel, srcSel, dstSel, quotedSel, proto, icmpType, icmpLen, optWords, pad uint8, frag uint16, badSum bool,
		srcRaw, dstRaw, quotedRaw, outerRaw uint32) {
		var outer netip.Addr
		switch outerSel % 4 {
		case 0, 1:
			outer = netip.AddrFrom4([4]byte{198, 18, 0, 2 + outerSel%4})
		case 2:
			outer = netip.AddrFrom4([4]byte{198, 18, 0, 9})
		default:
			outer = fuzzAddr(0, outerRaw, netip.Addr{})
		}
		src, dst := fuzzAddr(srcSel, srcRaw, outer), fuzzAddr(dstSel, dstRaw, outer)
		quoted := fuzzAddr(quotedSel, quotedRaw, outer)

		hlen := 20 + 4*int(optWords%11)
		tlen := hlen + int(icmpLen)
		b := make([]byte, tlen+int(pad%16))
		b[0] = 0x40 | byte(hlen/4)
		binary.BigEndian.PutUint16(b[2:4], uint16(tlen))
		binary.BigEndian.PutUint16(b[6:8], frag)
		b[8], b[9] = 64, proto
		s4, d4 := src.As4(), dst.As4()
		copy(b[12:16], s4[:])
		copy(b[16:20], d4[:])
		for i := 20; i < hlen; i++ {
			b[i] = 1 // NOP options
		}
		q := quoted.As4()
		body := b[hlen:tlen]
		if len(body) > 0 {
			body[0] = icmpType
		}
		if len(body) >= 28 {
			body[8] = 0x45
			copy(body[24:28], q[:])
		}
		// Padding repeats the quoted address: quoted from past the Total
		// Length, it would make a short quote pass.
		for i := tlen; i < len(b); i++ {
			b[i] = q[(i-tlen)%4]
		}
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:hlen]))
		if badSum {
			b[11] ^= 1
		}

		want := wantAccept(outer, b, hlen, tlen, src, dst, proto, frag)
		orig := bytes.Clone(b)
		got, v := tbl.accept(be32(outer), b)
		if v != want {
			t.Fatalf("from %s: %s -> %s, protocol %d, fragment field %#04x, %d-byte header, ICMP type %d of %d bytes quoting %s: %v, want %v",
				outer, src, dst, proto, frag, hlen, icmpType, icmpLen, quoted, v, want)
		}
		if !bytes.Equal(b, orig) {
			t.Fatalf("accept changed the packet: % x, was % x", b, orig)
		}
		if v == pass && (len(got) != tlen || &got[0] != &b[0]) {
			t.Fatalf("accepted %d bytes of a %d-byte packet (%d with padding), or a copy", len(got), tlen, len(b))
		}
		if v != pass && got != nil {
			t.Fatalf("dropped (%v), yet returned %d bytes", v, len(got))
		}
	})
}
