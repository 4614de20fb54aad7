package udp

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOnesSum compares onesSum with checksum (two bytes at a time, as RFC
// 1071 writes it) on every length up to 300 bytes at every alignment, on
// random data and on all ones, where the end-around carry matters most.
func TestOnesSum(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 310)
	for _, fill := range []string{"random", "ones", "zeros"} {
		for i := range buf {
			switch fill {
			case "random":
				buf[i] = byte(r.Uint32())
			case "ones":
				buf[i] = 0xff
			default:
				buf[i] = 0
			}
		}
		for off := range 8 {
			for n := 0; off+n <= len(buf); n++ {
				b := buf[off : off+n]
				if got, want := ^onesSum(b, 0), checksum(b); got != want {
					t.Fatalf("%s, %d bytes at offset %d: %#04x, want %#04x", fill, n, off, got, want)
				}
			}
		}
	}
	// acc is added with the end-around carry.
	if got := onesSum([]byte{0xff, 0xff}, 1); got != 1 {
		t.Fatalf("0xffff + 1 = %#x, want 1", got)
	}
}

// FuzzOnesSum: onesSum agrees with checksum on any input, split anywhere
// (the sum of two parts, the first of even length, is the sum of the whole).
func FuzzOnesSum(f *testing.F) {
	f.Add([]byte{1, 2, 3}, uint8(2))
	f.Add(bytes.Repeat([]byte{0xff}, 77), uint8(40))
	f.Fuzz(func(t *testing.T, b []byte, cut uint8) {
		whole := ^onesSum(b, 0)
		if want := checksum(b); whole != want {
			t.Fatalf("%#04x, want %#04x", whole, want)
		}
		k := min(int(cut)&^1, len(b)&^1)
		if split := ^onesSum(b[k:], onesSum(b[:k], 0)); split != whole {
			t.Fatalf("split at %d: %#04x, whole %#04x", k, split, whole)
		}
	})
}

// FuzzEncap feeds arbitrary reads from the device (virtio header and
// packet) to encap: it must not fail, and every datagram it queues must be
// one well-formed IPv4 packet for a peer; those cut from a TSO packet must
// carry valid checksums, and as many as it counts as forwarded. A USO
// packet must go out exactly as refUSO cuts it, when the rules written out
// plainly here say it may go, and not at all when not.
func FuzzEncap(f *testing.F) {
	seed := func(h vnetHdr, pkt []byte) []byte {
		b := make([]byte, vnetHdrLen+len(pkt))
		h.encode(b)
		copy(b[vnetHdrLen:], pkt)
		return b
	}
	tso := tcpPacket("10.244.1.5", "10.244.2.5", 1, 1, tcpACK|tcpPSH, payload(0, 3000))
	f.Add(seed(vnetHdr{gsoType: gsoTCPv4, gsoSize: 1000}, tso), true)
	f.Add(seed(vnetHdr{gsoType: gsoTCPv4, gsoSize: 1}, tso), false)
	f.Add(seed(vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 16}, tso), true)
	f.Add(seed(vnetHdr{}, ipPacket("10.244.1.5", "10.244.77.1", 1, 64, echo)), true)
	uso := usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, 3000))
	f.Add(seed(usoHdr(1200), uso), true)
	f.Add(seed(usoHdr(1), uso[:40]), false)
	f.Add(seed(usoHdr(1000), usoPacket("10.244.1.5", "10.244.3.5", 1, true, payload(0, 3000))), true)
	// Workers are made once: their buffers are most of an input's cost.
	withGSO, _ := newTestTx(true)
	withoutGSO, _ := newTestTx(false)
	f.Fuzz(func(t *testing.T, b []byte, gso bool) {
		w := withoutGSO
		if gso {
			w = withGSO
		}
		clear(w.local[:])
		isTSO := len(b) >= vnetHdrLen && decodeVnet(b).gsoType == gsoTCPv4
		var usoWant [][]byte
		isUSO := len(b) >= vnetHdrLen && decodeVnet(b).gsoType == gsoUDPL4
		if isUSO {
			usoWant = usoReference(w.tbl.Load(), decodeVnet(b), b[vnetHdrLen:])
		}
		if err := w.encap(w.tbl.Load(), w.load(decodeVnetOrZero(b), b[min(len(b), vnetHdrLen):])); err != nil {
			t.Fatal(err)
		}
		w.m.finish()
		n := 0
		for _, m := range messages(w.m) {
			for _, dg := range m.dgs {
				n++
				h, v := parseIPv4(dg)
				if v != pass || h.tlen != len(dg) || w.tbl.Load().lookup(h.dst) == nil {
					t.Fatalf("queued %x (%v)", dg, v)
				}
				if isTSO && !tcpValid(dg) {
					t.Fatalf("segment %x: checksums do not check", dg)
				}
				if isUSO && (n > len(usoWant) || string(dg) != string(usoWant[n-1])) {
					t.Fatalf("USO datagram %d:\n got %x\nwant the reference's %d datagrams", n-1, dg, len(usoWant))
				}
			}
		}
		if isUSO && n != len(usoWant) {
			t.Fatalf("USO packet: %d datagrams queued, the reference %d", n, len(usoWant))
		}
		if uint64(n) != w.local[pass] {
			t.Fatalf("%d datagrams queued, %d counted", n, w.local[pass])
		}
	})
}

// usoReference is what encap must send of the USO packet pkt with the
// virtio header h, by the rules written out plainly: an IPv4 packet with
// its header whole (options allowed), no flag but don't-fragment (not a
// fragment nor the first of several, the reserved bit clear), carrying UDP with a payload past its header, a segment size
// that cuts it into no more than maxSegments datagrams, for a peer's
// subnet (not ours), TTL above 1. Its datagrams are refUSO's of the packet
// with its TTL decremented; nil when it may not go.
func usoReference(t *table, h vnetHdr, pkt []byte) [][]byte {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil
	}
	ihl := int(pkt[0]&0x0f) * 4
	if ihl < 20 || len(pkt) <= ihl+8 || pkt[9] != protoUDP || h.gsoSize == 0 ||
		pkt[6]&^0x40 != 0 || pkt[7] != 0 || (len(pkt)-ihl-8+int(h.gsoSize)-1)/int(h.gsoSize) > maxSegments {
		return nil
	}
	dst := binary.BigEndian.Uint32(pkt[16:20])
	if t.lookup(dst) == nil || t.own.contains(dst) || pkt[8] <= 1 {
		return nil
	}
	p := append([]byte{}, pkt...)
	p[8]--
	return refUSO(p, int(h.gsoSize))
}

// decodeVnetOrZero decodes the virtio header at the start of b, if b is
// long enough for one.
func decodeVnetOrZero(b []byte) vnetHdr {
	if len(b) < vnetHdrLen {
		return vnetHdr{}
	}
	return decodeVnet(b)
}

// FuzzDecap feeds an arbitrary GRO train from a peer to decap: it must not
// fail; every packet written must be one well-formed IPv4 packet; and
// cutting the coalesced ones as the kernel would gives back exactly the
// packets accepted, in order, but for the fields coalescing does not keep
// (identification and checksums).
func FuzzDecap(f *testing.F) {
	const mss = 500
	var train []byte
	for i := range 4 {
		train = append(train, tcpPacket("10.244.2.5", "10.244.1.5", uint16(i), uint32(9+i*mss), tcpACK, payload(i*mss, mss))...)
	}
	f.Add(train, uint16(540))
	f.Add(train[:1000], uint16(540))
	f.Add(ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 8)), uint16(0))
	var udpTrain []byte
	for i := range 4 {
		udpTrain = append(udpTrain, udpDatagram("10.244.2.5", "10.244.1.5", uint16(i), payload(i, mss-i/3*100))...)
	}
	f.Add(udpTrain, uint16(mss+28))
	f.Add(ipPacket("10.244.2.255", "10.244.1.5", 17, 64, make([]byte, 8)), uint16(0))
	w, dev := newTestRx("198.18.0.2", [][]byte{train})
	f.Fuzz(func(t *testing.T, b []byte, seg uint16) {
		if len(b) == 0 || len(b) > bigBuf {
			return
		}
		// The whole of b is one message; its GRO segment size is seg.
		clear(w.local[:])
		dev.packets, dev.vnets = dev.packets[:0], dev.vnets[:0]
		w.fill("198.18.0.2", [][]byte{b})
		binary.NativeEndian.PutUint32(w.m.ctrl[unix.CmsgLen(0):], uint32(seg))
		var accepted [][]byte
		ln, src, sz, _ := w.m.received(0)
		if sz <= 0 || sz > ln {
			sz = ln
		}
		for off := 0; off < ln; off += sz {
			if p, v := w.tbl.Load().accept(src, b[off:min(off+sz, ln)]); v == pass {
				accepted = append(accepted, bytes.Clone(p))
			}
		}
		if err := w.decap(w.tbl.Load(), 1); err != nil {
			t.Fatal(err)
		}
		var out [][]byte
		for i, pkt := range dev.packets {
			if h, v := parseIPv4(pkt); v != pass || h.tlen != len(pkt) {
				t.Fatalf("wrote %x (%v)", pkt, v)
			}
			h := dev.vnets[i]
			if h == (vnetHdr{}) {
				out = append(out, pkt)
				continue
			}
			tso, ok := parseGSO(pkt, h)
			if !ok {
				t.Fatalf("wrote %x with %+v: not a TSO packet", pkt, h)
			}
			for j := range tso.segments {
				hdr := make([]byte, tso.hdrLen)
				out = append(out, append(hdr, tso.segment(pkt, j, hdr)...))
			}
		}
		if len(out) != len(accepted) {
			t.Fatalf("%d packets out, %d accepted", len(out), len(accepted))
		}
		mask := func(p []byte) []byte {
			p = bytes.Clone(p)
			clear(p[4:6])
			clear(p[10:12])
			if len(p) >= 38 && p[9] == protoTCP {
				clear(p[36:38])
			}
			if len(p) >= 28 && p[9] == protoUDP {
				clear(p[26:28])
			}
			return p
		}
		for i := range out {
			if !bytes.Equal(mask(out[i]), mask(accepted[i])) {
				t.Fatalf("packet %d:\n got %x\nwant %x", i, out[i], accepted[i])
			}
		}
	})
}

// TestTCPCandidate: only plain ACK segments with a payload, don't-fragment
// and no IPv4 options are coalesced.
func TestTCPCandidate(t *testing.T) {
	ok := tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK, payload(0, 10))
	mut := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(ok)) }
	for _, tc := range []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"ACK", ok, true},
		{"ACK PSH", tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK|tcpPSH, payload(0, 10)), true},
		{"no payload", tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK, nil), false},
		{"FIN", tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK|tcpFIN, payload(0, 10)), false},
		{"no DF", mut(func(b []byte) []byte { b[6] = 0; return b }), false},
		{"UDP", mut(func(b []byte) []byte { b[9] = 17; return b }), false},
		{"TCP header past the end", mut(func(b []byte) []byte { b[32] = 15 << 4; return b }), false},
	} {
		if _, _, got := tcpCandidate(tc.pkt); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestFinishChecksumNeverZero: a checksum the device left to us whose sum
// comes out as 0 is written as 0xffff, as the kernel's skb_checksum_help
// writes it (CSUM_MANGLED_0): for UDP a 0 on the wire means "no checksum"
// (RFC 768), and the datagram would lose its integrity check. For TCP the
// two are the same number in one's complement; the kernel writes 0xffff
// there too.
func TestFinishChecksumNeverZero(t *testing.T) {
	for _, tc := range []struct {
		name          string
		proto         uint8
		hdr, csumOffs int
	}{
		{"UDP", 17, 8, 6},
		{"TCP", protoTCP, 20, tcpCsumOffset},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, n := range []int{tc.hdr + 2, tc.hdr + 101, tc.hdr + 1000} {
				pkt := ipPacket("10.244.1.5", "10.244.2.5", tc.proto, 64, payload(3, n))
				seg := pkt[20:]
				if tc.proto == 17 {
					binary.BigEndian.PutUint16(seg[4:], uint16(n))
				} else {
					seg[12] = 5 << 4
				}
				// Make the segment's sum, pseudo header included,
				// 0xffff: its last aligned word completes it.
				w := (n - 2) &^ 1
				binary.BigEndian.PutUint16(seg[w:], 0)
				binary.BigEndian.PutUint16(seg[tc.csumOffs:], 0)
				binary.BigEndian.PutUint16(seg[w:], ^onesSum(seg, pseudoSum(pkt, tc.proto, n)))
				if ^onesSum(seg, pseudoSum(pkt, tc.proto, n)) != 0 {
					t.Fatalf("%d bytes: test segment does not sum to 0xffff", n)
				}
				// As the device hands it over: the pseudo header's sum
				// in the checksum field.
				binary.BigEndian.PutUint16(seg[tc.csumOffs:], pseudoSum(pkt, tc.proto, n))
				if !finishChecksum(pkt, 20, uint16(tc.csumOffs)) {
					t.Fatalf("%d bytes: finishChecksum refused", n)
				}
				if got := binary.BigEndian.Uint16(seg[tc.csumOffs:]); got != 0xffff {
					t.Errorf("%d bytes: checksum on the wire %#04x, want 0xffff", n, got)
				}
				if c := ^onesSum(seg, pseudoSum(pkt, tc.proto, n)); c != 0 {
					t.Errorf("%d bytes: checksum does not verify (%#04x)", n, c)
				}
			}
		})
	}
}
