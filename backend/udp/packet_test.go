package udp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// checksum is the Internet checksum (RFC 1071) of b, computed two bytes at
// a time as the RFC writes it: the reference the datapath's onesSum is
// checked against, and the tests' own checksums.
func checksum(b []byte) uint16 {
	var sum uint32
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// ipPacket builds an IPv4 packet from src to dst with protocol proto, TTL
// ttl and payload, with a valid header checksum.
func ipPacket(src, dst string, proto, ttl uint8, payload []byte) []byte {
	b := make([]byte, 20+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:6], 0x1234)
	b[8], b[9] = ttl, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:16], s[:])
	copy(b[16:20], d[:])
	binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
	copy(b[20:], payload)
	return b
}

// echo is an ICMP echo request header with 4 bytes of data.
var echo = []byte{8, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g'}

func TestParseIPv4(t *testing.T) {
	good := ipPacket("10.244.1.2", "10.244.2.3", 6, 64, make([]byte, 20))
	withOpts := func() []byte {
		b := make([]byte, 24+4)
		b[0] = 0x46
		binary.BigEndian.PutUint16(b[2:4], uint16(len(b)))
		return b
	}()
	mut := func(f func(b []byte) []byte) []byte {
		b := append([]byte(nil), good...)
		return f(b)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want verdict
	}{
		{"good", good, pass},
		{"options", withOpts, pass},
		{"empty", nil, dropMalformed},
		{"IPv6", mut(func(b []byte) []byte { b[0] = 0x60; return b }), dropNotIPv4},
		{"short", good[:19], dropMalformed},
		{"header length 4", mut(func(b []byte) []byte { b[0] = 0x44; return b }), dropMalformed},
		{"header past the end", mut(func(b []byte) []byte { b[0] = 0x4f; return b[:40] }), dropMalformed},
		{"total length too long", mut(func(b []byte) []byte { return b[:len(b)-1] }), dropMalformed},
		// A link layer may pad a frame: the packet ends at its Total
		// Length, as Linux's ip_rcv trims it.
		{"trailing bytes", mut(func(b []byte) []byte { return append(b, 0, 0, 0) }), pass},
		{"total length shorter than the header", mut(func(b []byte) []byte { b[2], b[3] = 0, 19; return b }), dropMalformed},
		{"total length shorter than the options", mut(func(b []byte) []byte { b[0], b[2], b[3] = 0x46, 0, 20; return b }), dropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if h, v := parseIPv4(tc.b); v != tc.want || v == pass && h.tlen != int(binary.BigEndian.Uint16(tc.b[2:4])) {
				t.Fatalf("parseIPv4: %v, total length %d; want %v", v, h.tlen, tc.want)
			}
		})
	}
	h, _ := parseIPv4(good)
	if h.hlen != 20 || h.tlen != len(good) || h.ttl != 64 || h.proto != 6 || h.src != 0x0af40102 || h.dst != 0x0af40203 {
		t.Fatalf("parsed %+v", h)
	}
}

// TestDecTTL checks the incremental checksum update against a full
// recomputation for every TTL and many starting checksums.
func TestDecTTL(t *testing.T) {
	for ttl := 2; ttl <= 255; ttl++ {
		for id := 0; id < 1<<16; id += 251 {
			b := ipPacket("10.244.1.2", "10.244.2.3", 17, uint8(ttl), nil)
			binary.BigEndian.PutUint16(b[4:6], uint16(id))
			binary.BigEndian.PutUint16(b[10:12], 0)
			binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
			decTTL(b)
			if b[8] != uint8(ttl-1) {
				t.Fatalf("TTL %d became %d", ttl, b[8])
			}
			if c := checksum(b[:20]); c != 0 && c != 0xffff {
				t.Fatalf("TTL %d id %d: header checksum no longer verifies (%#04x)", ttl, id, c)
			}
		}
	}
}

func TestICMPError(t *testing.T) {
	from := be32(netip.MustParseAddr("10.244.1.0"))
	mask := toSubnet4(netip.MustParsePrefix("10.244.1.0/24")).mask
	off := ipPacket("10.244.1.2", "10.244.77.3", protoICMP, 64, echo)
	h, _ := parseIPv4(off)
	out := make([]byte, icmpErrorMaxLen)
	if !icmpDue(off, h, mask, mask) {
		t.Fatalf("no error due about an echo request to a subnet nobody holds")
	}
	n := icmpError(out, from, icmpDestUnreachable, icmpNetUnreachable, off, h, 0x4242)
	if n != 20+8+len(off) {
		t.Fatalf("length %d, want %d", n, 20+8+len(off))
	}
	if binary.BigEndian.Uint16(out[4:6]) != 0x4242 || binary.BigEndian.Uint16(out[6:8]) != 0 || out[1] != 0xc0 {
		t.Fatalf("identification %#04x, flags and offset %#04x, TOS %#02x; want 0x4242, 0 and 0xc0", out[4:6], out[6:8], out[1])
	}
	got, v := parseIPv4(out[:n])
	if v != pass || got.proto != protoICMP || got.src != from || got.dst != h.src || got.ttl != 64 {
		t.Fatalf("ICMP header %+v, %v", got, v)
	}
	if checksum(out[:20]) != 0 {
		t.Fatalf("IP checksum does not verify")
	}
	icmp := out[20:n]
	if icmp[0] != icmpDestUnreachable || icmp[1] != icmpNetUnreachable || checksum(icmp) != 0 {
		t.Fatalf("ICMP type %d code %d checksum %#x", icmp[0], icmp[1], checksum(icmp))
	}
	if string(icmp[8:]) != string(off) {
		t.Fatalf("quote is not the whole offender")
	}

	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"about an ICMP error", ipPacket("10.244.1.2", "10.244.77.3", protoICMP, 64, []byte{3, 0, 0, 0, 0, 0, 0, 0})},
		{"ICMP without a header", ipPacket("10.244.1.2", "10.244.77.3", protoICMP, 64, nil)},
		{"from 0.0.0.0", ipPacket("0.0.0.0", "10.244.77.3", 17, 64, make([]byte, 8))},
		{"to multicast", ipPacket("10.244.1.2", "239.1.1.1", 17, 64, make([]byte, 8))},
		{"to broadcast", ipPacket("10.244.1.2", "255.255.255.255", 17, 64, make([]byte, 8))},
		{"to a subnet's broadcast address", ipPacket("10.244.1.2", "10.244.77.255", 17, 64, make([]byte, 8))},
		{"from a subnet's broadcast address", ipPacket("10.244.1.255", "10.244.77.3", 17, 64, make([]byte, 8))},
		{"a later fragment", func() []byte {
			b := ipPacket("10.244.1.2", "10.244.77.3", 17, 64, make([]byte, 8))
			b[7] = 1
			return b
		}()},
	} {
		h, v := parseIPv4(tc.pkt)
		if v != pass {
			t.Fatalf("%s: test packet does not parse: %v", tc.name, v)
		}
		if icmpDue(tc.pkt, h, mask, mask) {
			t.Errorf("%s: an ICMP error is due", tc.name)
		}
	}
}

// TestICMPLimiter: a full bucket lets icmpBurst errors through at once,
// then one per icmpInterval; credit stops growing at a full bucket, and a
// clock that goes back earns none.
func TestICMPLimiter(t *testing.T) {
	var l icmpLimiter
	t0 := time.Unix(1000, 0)
	passed := func(at time.Time, n int) int {
		k := 0
		for range n {
			if l.allow(at) {
				k++
			}
		}
		return k
	}
	for _, step := range []struct {
		name string
		at   time.Time
		try  int
		want int
	}{
		{"a full bucket", t0, 3 * icmpBurst, icmpBurst},
		{"the same instant", t0, 1, 0},
		{"half an interval on", t0.Add(icmpInterval / 2), 1, 0},
		{"one interval on", t0.Add(icmpInterval), 5, 1},
		{"ten intervals on", t0.Add(11 * icmpInterval), 20, 10},
		{"the clock went back", t0, 5, 0},
		{"an hour on", t0.Add(time.Hour), 3 * icmpBurst, icmpBurst},
	} {
		if got := passed(step.at, step.try); got != step.want {
			t.Fatalf("%s: %d of %d allowed, want %d", step.name, got, step.try, step.want)
		}
	}
}

// FuzzParseIPv4 feeds arbitrary bytes to the parsers of network data: the
// header parser, the decision on a datagram from a peer, the routing of a
// packet from the device and the ICMP error about it. None may panic; what
// is accepted must be what it claims. Routing changes only the TTL and the
// header checksum, which still verifies if it did; the ICMP error goes from
// us to the packet's source and quotes the packet's start.
func FuzzParseIPv4(f *testing.F) {
	f.Add(ipPacket("10.244.2.5", "10.244.1.9", 6, 64, make([]byte, 20)))
	f.Add(ipPacket("10.244.2.5", "10.244.1.9", protoICMP, 1, echo))
	f.Add(ipPacket("10.244.1.2", "10.244.9.9", 17, 64, make([]byte, 8)))
	f.Add(ipPacket("198.18.0.2", "10.244.1.9", 6, 64, make([]byte, 20)))
	f.Add(ipPacket("10.244.1.9", "10.244.3.5", 6, 64, make([]byte, 20)))
	f.Add([]byte{0x4f})
	f.Add([]byte{0x60, 0, 0, 0})
	own := netip.MustParsePrefix("10.244.1.0/24")
	tbl := newTable(own, []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/25"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
	peer2 := be32(netip.MustParseAddr("198.18.0.2"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, v := parseIPv4(b)
		if v == pass && (h.hlen < 20 || h.tlen < h.hlen || h.tlen > len(b)) {
			t.Fatalf("accepted a bad header: %+v for %d bytes", h, len(b))
		}
		if got, av := tbl.accept(peer2, b); av == pass {
			if v != pass || h.src>>8 != 0x0af402 && h.src != peer2 || h.dst>>8 != 0x0af401 || checksum(b[:h.hlen]) != 0 ||
				len(got) != h.tlen || &got[0] != &b[0] {
				t.Fatalf("accepted %+v from peer 2 as %d of its %d bytes", h, len(got), len(b))
			}
		}
		pkt := append([]byte(nil), b...)
		p, h2, v2 := route(tbl, pkt)
		if v2 == pass && (p == nil || pkt[8] != b[8]-1 || !p.Subnet.Contains(netip.AddrFrom4([4]byte{byte(h2.dst >> 24), byte(h2.dst >> 16), byte(h2.dst >> 8), byte(h2.dst)}))) {
			t.Fatalf("routed %+v to %v", h2, p)
		}
		if v2 == pass {
			for i := range pkt {
				if pkt[i] != b[i] && i != 8 && i != 10 && i != 11 {
					t.Fatalf("routing changed byte %d of %x: %x", i, b, pkt)
				}
			}
			if checksum(b[:h2.hlen]) == 0 && checksum(pkt[:h2.hlen]) != 0 {
				t.Fatalf("routing %x broke its header checksum: %x", b, pkt)
			}
		}
		if v2 == dropNoRoute || v2 == dropTTL {
			pkt = pkt[:h2.tlen] // as encap cuts it
			out := make([]byte, icmpErrorMaxLen)
			srcMask, dstMask := tbl.broadcastMasks(h2)
			if icmpDue(pkt, h2, srcMask, dstMask) {
				n := icmpError(out, tbl.from, icmpDestUnreachable, 0, pkt, h2, 7)
				if e, v := parseIPv4(out[:n]); v != pass || e.tlen != n || checksum(out[:20]) != 0 || checksum(out[20:n]) != 0 {
					t.Fatalf("built a bad ICMP error: % x", out[:n])
				}
				if e, _ := parseIPv4(out[:n]); e.src != tbl.from || e.dst != h2.src || e.proto != protoICMP ||
					out[20] != icmpDestUnreachable || !bytes.Equal(out[28:n], pkt[:min(len(pkt), icmpErrorMaxLen-28)]) {
					t.Fatalf("ICMP error % x about % x: not from us to its source quoting its start", out[:n], pkt)
				}
			}
		}
	})
}
