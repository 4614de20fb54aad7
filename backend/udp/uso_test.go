package udp

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// USO: a UDP/IPv4 packet of up to 64 KiB that a socket sent with
// UDP_SEGMENT, handed over by the device (VIRTIO_NET_HDR_GSO_UDP_L4) and
// cut here into its datagrams. These tests compare the cut with refUSO, the
// same cut written out plainly (copies, a checksum computed from scratch).

// usoPacket is a UDP/IPv4 packet from src:40000 to dst:4433 carrying
// payload, as the device hands over a UDP_SEGMENT send: total and UDP
// lengths of the whole, and in the UDP checksum field the pseudo header's
// sum (NEEDS_CSUM). df sets don't-fragment, which Linux leaves clear on a
// GSO packet longer than the MTU unless the socket asks for it
// (IP_PMTUDISC_DO).
func usoPacket(src, dst string, id uint16, df bool, payload []byte) []byte {
	b := ipPacket(src, dst, protoUDP, 64, make([]byte, udpHeaderLen+len(payload)))
	binary.BigEndian.PutUint16(b[4:], id)
	if df {
		binary.BigEndian.PutUint16(b[6:], ipDF)
	}
	binary.BigEndian.PutUint16(b[10:], 0)
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	udp := b[20:]
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 4433)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpHeaderLen:], payload)
	binary.BigEndian.PutUint16(udp[6:], pseudoSum(b, protoUDP, len(udp)))
	return b
}

// usoHdr is the virtio header the device puts before a USO packet of
// segment size mss.
func usoHdr(mss int) vnetHdr {
	return vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, hdrLen: 28, gsoSize: uint16(mss), csumStart: 20, csumOffset: udpCsumOffset}
}

// refUSO cuts the USO packet pkt (IPv4 header of any length, then UDP) into
// datagrams of mss payload bytes as the kernel's GSO does: each a copy of
// the headers and its part of the payload, with its total length, an
// identification counting up from pkt's, its UDP length, and both
// checksums computed from scratch (a UDP checksum of 0 sent as 0xffff).
func refUSO(pkt []byte, mss int) [][]byte {
	ihl := int(pkt[0]&0x0f) * 4
	data := pkt[ihl+8:]
	var out [][]byte
	for i := 0; i*mss < len(data); i++ {
		part := data[i*mss : min((i+1)*mss, len(data))]
		seg := append(append([]byte{}, pkt[:ihl+8]...), part...)
		binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
		binary.BigEndian.PutUint16(seg[4:], binary.BigEndian.Uint16(pkt[4:])+uint16(i))
		binary.BigEndian.PutUint16(seg[10:], 0)
		binary.BigEndian.PutUint16(seg[10:], checksum(seg[:ihl]))
		udp := seg[ihl:]
		binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
		binary.BigEndian.PutUint16(udp[6:], 0)
		pseudo := append(append([]byte{}, seg[12:20]...), 0, protoUDP, byte(len(udp)>>8), byte(len(udp)))
		c := checksum(append(pseudo, udp...))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[6:], c)
		out = append(out, seg)
	}
	return out
}

// udpValid reports whether pkt's IPv4 and UDP checksums check.
func udpValid(pkt []byte) bool {
	ihl := int(pkt[0]&0x0f) * 4
	return checksum(pkt[:ihl]) == 0 && binary.BigEndian.Uint16(pkt[ihl+6:]) != 0 &&
		^onesSum(pkt[ihl:], pseudoSum(pkt, protoUDP, len(pkt)-ihl)) == 0
}

// TestEncapUSO: a USO packet goes out as its datagrams, each a whole
// UDP/IPv4 packet with its own length, identification and checksums, the
// last one shorter, TTL decremented, in one GSO message, each counted.
// Before, the device was not asked for USO and the datapath had no cut: such
// a packet was dropped as malformed.
func TestEncapUSO(t *testing.T) {
	const mss = 1200
	for _, tc := range []struct {
		size int
		df   bool
	}{{10 * mss, false}, {9*mss + 500, true}, {mss + 1, false}, {50 * mss, true}} {
		w, _ := newTestTx(true)
		uso := usoPacket("10.244.1.5", "10.244.2.5", 100, tc.df, payload(0, tc.size))
		want := append([]byte{}, uso...)
		want[8]-- // the router's TTL step
		if err := w.encap(w.tbl.Load(), w.load(usoHdr(mss), uso)); err != nil {
			t.Fatal(err)
		}
		w.m.finish()
		got := messages(w.m)
		n := (tc.size + mss - 1) / mss
		if len(got) != 1 || len(got[0].dgs) != n || got[0].gso != 28+mss || got[0].dst != netip.MustParseAddrPort("198.18.0.2:8285") {
			t.Fatalf("size %d: %d messages, want one of %d datagrams to 198.18.0.2:8285", tc.size, len(got), n)
		}
		if w.local[pass] != uint64(n) {
			t.Fatalf("size %d: counted %v, want %d forwarded", tc.size, w.local, n)
		}
		for i, ref := range refUSO(want, mss) {
			if dg := got[0].dgs[i]; string(dg) != string(ref) {
				t.Fatalf("size %d: datagram %d:\n got %x\nwant %x", tc.size, i, dg[:28], ref[:28])
			}
			if !udpValid(got[0].dgs[i]) {
				t.Fatalf("size %d: datagram %d: checksums do not check", tc.size, i)
			}
		}
	}
}

// TestEncapUSOChecksumNeverZero: a datagram whose UDP checksum comes out as
// 0 goes with 0xffff, as the kernel sends it: 0 would say the sender
// computed none.
func TestEncapUSOChecksumNeverZero(t *testing.T) {
	const mss = 100
	uso := usoPacket("10.244.1.5", "10.244.2.5", 7, true, payload(0, 2*mss))
	// Make the second datagram's sum 0xffff (checksum 0) with its last
	// two payload bytes, in the reference's terms.
	end := len(uso) - 2
	binary.BigEndian.PutUint16(uso[end:], 0)
	probe := append([]byte{}, uso...)
	probe[8]--
	ref := refUSO(probe, mss)[1]
	binary.BigEndian.PutUint16(ref[len(ref)-2:], 0)
	binary.BigEndian.PutUint16(ref[26:], 0)
	binary.BigEndian.PutUint16(uso[end:], ^onesSum(ref[20:], pseudoSum(ref, protoUDP, len(ref)-20)))
	w, _ := newTestTx(true)
	if err := w.encap(w.tbl.Load(), w.load(usoHdr(mss), uso)); err != nil {
		t.Fatal(err)
	}
	w.m.finish()
	got := messages(w.m)
	if len(got) != 1 || len(got[0].dgs) != 2 {
		t.Fatalf("%d messages, want one of 2 datagrams", len(got))
	}
	dg := got[0].dgs[1]
	if c := binary.BigEndian.Uint16(dg[26:]); c != 0xffff || !udpValid(dg) {
		t.Fatalf("second datagram's UDP checksum %#04x (valid %v), want 0xffff", c, udpValid(dg))
	}
}

// TestEncapUSORefused: a USO packet that may not be sent is refused as a
// TCP one is: every datagram it holds is counted, and one ICMP error goes
// back, quoting it; a malformed one is one malformed packet.
func TestEncapUSORefused(t *testing.T) {
	const mss = 500
	ttl1 := usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, 3*mss))
	ttl1[8] = 1
	binary.BigEndian.PutUint16(ttl1[10:], 0)
	binary.BigEndian.PutUint16(ttl1[10:], checksum(ttl1[:20]))
	tcp := usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, 3*mss))
	tcp[9] = protoTCP
	frag := usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, 3*mss))
	frag[6] |= 0x20 // more fragments
	for _, tc := range []struct {
		name  string
		pkt   []byte
		mss   int
		verd  verdict
		count uint64
		icmp  int
	}{
		{"unknown subnet", usoPacket("10.244.1.5", "10.244.77.5", 1, false, payload(0, 3*mss)), mss, dropNoRoute, 3, 1},
		{"TTL 1", ttl1, mss, dropTTL, 3, 1},
		{"TCP in a USO packet", tcp, mss, dropMalformed, 1, 0},
		{"a fragment", frag, mss, dropMalformed, 1, 0},
		{"segment size 0", usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, 3*mss)), 0, dropMalformed, 1, 0},
		{"more segments than the buffers hold", usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, maxSegments+1)), 1, dropMalformed, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(true)
			if err := w.encap(w.tbl.Load(), w.load(usoHdr(tc.mss), tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if w.m.n != 0 {
				t.Fatalf("%d messages queued", w.m.n)
			}
			for v, n := range w.local {
				if want := map[bool]uint64{true: tc.count}[verdict(v) == tc.verd]; n != want {
					t.Fatalf("counted %v, want %d as %v", w.local, tc.count, tc.verd)
				}
			}
			if len(dev.packets) != tc.icmp {
				t.Fatalf("%d ICMP errors written back, want %d", len(dev.packets), tc.icmp)
			}
		})
	}
}

// udpDatagram is a UDP/IPv4 datagram from src:40000 to dst:4433 with
// identification id, checksums valid, don't-fragment clear (as Linux sends
// a UDP_SEGMENT send's datagrams).
func udpDatagram(src, dst string, id uint16, payload []byte) []byte {
	b := usoPacket(src, dst, id, false, payload)
	udp := b[20:]
	binary.BigEndian.PutUint16(udp[6:], 0)
	c := ^onesSum(udp, pseudoSum(b, protoUDP, len(udp)))
	if c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(udp[6:], c)
	return b
}

// TestDecapCoalescesUDP: consecutive UDP datagrams of one flow received
// from a peer are written as one USO packet (the kernel cuts it again for
// a socket without UDP_GRO), which cut as the kernel does gives back
// exactly the datagrams received, as the kernel's UDP GRO would take them:
// same addresses, ports, TOS, TTL and don't-fragment, identifications
// counting up from the first's unless don't-fragment is set (the cut
// numbers them so; Linux's UDP GRO asks the same since 6.9), payloads of
// the first's size but for a shorter last, which ends the packet, none
// without a checksum, at most 64 (a checksum that is there is not
// verified: TestDecapTrustsOuterChecksum). Before, each went
// alone; and, until identifications were checked, datagrams that may be
// fragmented were coalesced whatever theirs, and cut again with others.
func TestDecapCoalescesUDP(t *testing.T) {
	const mss = 1000
	dg := func(i, n int) []byte {
		return udpDatagram("10.244.2.5", "10.244.1.5", uint16(10+i), payload(i*mss, n))
	}
	mut := func(p []byte, f func(p []byte)) []byte {
		p = append([]byte{}, p...)
		f(p)
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
		return p
	}
	otherPort := mut(dg(1, mss), func(p []byte) { p[21]++; p[27]-- })
	otherTTL := mut(dg(1, mss), func(p []byte) { p[8]-- })
	withDF := mut(dg(1, mss), func(p []byte) { p[6] |= ipDF >> 8 })
	noSum := mut(dg(1, mss), func(p []byte) { p[26], p[27] = 0, 0 })
	badLen := mut(dg(1, mss), func(p []byte) { p[25]--; p[27]++ })
	df := func(p []byte) []byte { return mut(p, func(p []byte) { p[6] |= ipDF >> 8 }) }
	withID := func(p []byte, id uint16) []byte {
		return mut(p, func(p []byte) { binary.BigEndian.PutUint16(p[4:], id) })
	}
	var many [][]byte
	for i := range 70 {
		many = append(many, dg(i, 100))
	}
	for _, tc := range []struct {
		name   string
		trains [][][]byte
		want   []int // datagrams per packet written, in order
	}{
		{"one train", [][][]byte{{dg(0, mss), dg(1, mss), dg(2, mss), dg(3, 300)}}, []int{4}},
		{"across trains", [][][]byte{{dg(0, mss), dg(1, mss)}, {dg(2, mss)}}, []int{3}},
		{"a shorter one ends it", [][][]byte{{dg(0, mss), dg(1, 500)}, {dg(2, mss), dg(3, mss)}}, []int{2, 2}},
		{"a longer one", [][][]byte{{dg(0, 500)}, {dg(1, mss)}}, []int{1, 1}},
		{"another port", [][][]byte{{dg(0, mss), otherPort, dg(2, mss)}}, []int{1, 1, 1}},
		{"another TTL", [][][]byte{{dg(0, mss), otherTTL}}, []int{1, 1}},
		{"don't-fragment differs", [][][]byte{{dg(0, mss), withDF}}, []int{1, 1}},
		{"no checksum", [][][]byte{{dg(0, mss), noSum, dg(2, mss)}}, []int{1, 1, 1}},
		{"a UDP length not the packet's", [][][]byte{{dg(0, mss), badLen}}, []int{1, 1}},
		{"identifications out of sequence", [][][]byte{{dg(0, mss), dg(5, mss), dg(6, mss)}}, []int{1, 2}},
		{"the same identification", [][][]byte{{dg(0, mss), withID(dg(1, mss), 10)}}, []int{1, 1}},
		{"identifications past 65535", [][][]byte{{withID(dg(0, mss), 0xffff), withID(dg(1, mss), 0)}}, []int{2}},
		{"don't-fragment: identifications free", [][][]byte{{df(dg(0, mss)), df(dg(5, mss)), df(withID(dg(2, mss), 10))}}, []int{3}},
		{"at most 64", [][][]byte{many}, []int{64, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev, in := decapTrains(t, tc.trains)
			if len(dev.packets) != len(tc.want) {
				t.Fatalf("%d packets written, want %d", len(dev.packets), len(tc.want))
			}
			if w.local[pass] != uint64(len(in)) {
				t.Fatalf("counted %v, want %d forwarded", w.local, len(in))
			}
			k := 0
			for i, pkt := range dev.packets {
				h := dev.vnets[i]
				if tc.want[i] == 1 {
					if h != (vnetHdr{}) || string(pkt) != string(in[k]) {
						t.Fatalf("packet %d: not written as received (virtio %+v)", i, h)
					}
					k++
					continue
				}
				head := in[k]
				if h != (vnetHdr{flags: vnetNeedsCsum, gsoType: gsoUDPL4, hdrLen: 28, gsoSize: uint16(len(head) - 28), csumStart: 20, csumOffset: udpCsumOffset}) {
					t.Fatalf("packet %d: virtio header %+v", i, h)
				}
				if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || checksum(pkt[:20]) != 0 ||
					int(binary.BigEndian.Uint16(pkt[24:])) != len(pkt)-20 {
					t.Fatalf("packet %d: total length %d, UDP length %d of %d, or header checksum wrong",
						i, binary.BigEndian.Uint16(pkt[2:]), binary.BigEndian.Uint16(pkt[24:]), len(pkt))
				}
				done := append([]byte{}, pkt...)
				if !finishChecksum(done, h.csumStart, h.csumOffset) || !udpValid(done) {
					t.Fatalf("packet %d: its UDP checksum, completed, does not verify", i)
				}
				gp, ok := parseGSO(pkt, h)
				if !ok || gp.segments != tc.want[i] {
					t.Fatalf("packet %d: %+v, %v; want %d datagrams", i, gp, ok, tc.want[i])
				}
				for j := range gp.segments {
					hdr := make([]byte, gp.hdrLen)
					got := append(hdr, gp.segment(pkt, j, hdr)...)
					want := in[k]
					if head[6]&(ipDF>>8) != 0 {
						want = mut(want, func(p []byte) { binary.BigEndian.PutUint16(p[4:], binary.BigEndian.Uint16(head[4:])+uint16(j)) })
					}
					if string(got) != string(want) {
						t.Fatalf("packet %d, datagram %d:\n got %x\nwant %x", i, j, got[:28], want[:28])
					}
					k++
				}
			}
		})
	}
}

// TestDecapUDPAloneWithoutUSO: where the device did not take USO (Linux
// before 6.2, which refuses a VIRTIO_NET_HDR_GSO_UDP_L4 write with EINVAL),
// UDP datagrams are written one by one, as they came; TCP segments are
// still coalesced. Before, they were coalesced whatever the device took,
// and there every such write would have failed, its datagrams lost.
func TestDecapUDPAloneWithoutUSO(t *testing.T) {
	var train [][]byte
	for i := range 4 {
		train = append(train, udpDatagram("10.244.2.5", "10.244.1.5", uint16(i), payload(i, 500)))
	}
	tcp := [][]byte{
		tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK, payload(0, 500)),
		tcpPacket("10.244.2.5", "10.244.1.5", 2, 501, tcpACK, payload(500, 500)),
	}
	w, dev := newTestRx("198.18.0.2", train, tcp)
	w.uso = false
	if err := w.decap(w.tbl.Load(), 2); err != nil {
		t.Fatal(err)
	}
	if len(dev.packets) != 5 {
		t.Fatalf("%d packets written, want the 4 datagrams alone and the 2 TCP segments as one", len(dev.packets))
	}
	for i, d := range train {
		if dev.vnets[i] != (vnetHdr{}) || string(dev.packets[i]) != string(d) {
			t.Fatalf("datagram %d not written alone as it came (virtio %+v)", i, dev.vnets[i])
		}
	}
	if dev.vnets[4].gsoType != gsoTCPv4 {
		t.Fatalf("TCP segments written with %+v, want one TSO packet", dev.vnets[4])
	}
}

// TestUDPCandidate: only datagrams with a payload, a UDP length that is
// the packet's, a checksum (not 0; whether it verifies is not looked at,
// see TestDecapTrustsOuterChecksum), no IPv4 options and not fragments are
// coalesced; don't-fragment may be either.
func TestUDPCandidate(t *testing.T) {
	ok := udpDatagram("10.244.2.5", "10.244.1.5", 1, payload(0, 10))
	mut := func(f func(b []byte)) []byte {
		b := append([]byte{}, ok...)
		f(b)
		return b
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"plain", ok, true},
		{"DF", mut(func(b []byte) { b[6] = ipDF >> 8 }), true},
		{"no payload", udpDatagram("10.244.2.5", "10.244.1.5", 1, nil), false},
		{"more fragments", mut(func(b []byte) { b[6] = 0x20 }), false},
		{"fragment offset", mut(func(b []byte) { b[7] = 1 }), false},
		{"IPv4 options", mut(func(b []byte) { b[0] = 0x46 }), false},
		{"TCP", mut(func(b []byte) { b[9] = protoTCP }), false},
		{"no checksum", mut(func(b []byte) { b[26], b[27] = 0, 0 }), false},
		{"bad checksum", mut(func(b []byte) { b[30] ^= 1 }), true},
		{"UDP length short", mut(func(b []byte) { b[25]--; b[27]++ }), false},
	} {
		if _, _, got := udpCandidate(tc.pkt); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
