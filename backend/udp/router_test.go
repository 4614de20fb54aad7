package udp

// Router behaviour of the datapath checked against the kernel's and the
// RFCs' (RFC 1812, RFC 792, RFC 1122): what the TSO segmenter puts on each
// segment, and what the coalescer may merge.

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// tcpECE is a TCP flag the datapath never looks at.
const tcpECE = 0x40

// TestEncapTSOCWRFirstOnly: CWR, which a TSO packet carries for the whole
// of it, goes out on its first segment only, as the kernel's own
// tcp_gso_segment cuts it; ECE stays on every segment. Before, every
// segment carried CWR: a receiver that saw a CE mark after the first would
// take a later CWR for the answer to it and stop echoing ECE, and the
// congestion signal was lost (RFC 3168 6.1.3).
func TestEncapTSOCWRFirstOnly(t *testing.T) {
	const mss = 1000
	w, _ := newTestTx(true)
	tso := tcpPacket("10.244.1.5", "10.244.2.5", 100, 5000, tcpACK|tcpCWR|tcpECE, payload(0, 3*mss))
	h := vnetHdr{gsoType: gsoTCPv4, hdrLen: 40, gsoSize: mss}
	if err := w.encap(w.tbl.Load(), w.load(h, tso)); err != nil {
		t.Fatal(err)
	}
	w.m.finish()
	got := messages(w.m)
	if len(got) != 1 || len(got[0].dgs) != 3 {
		t.Fatalf("messages %+v, want one of 3 segments", got)
	}
	for i, dg := range got[0].dgs {
		want := uint8(tcpACK | tcpECE)
		if i == 0 {
			want |= tcpCWR
		}
		if dg[33] != want || !tcpValid(dg) {
			t.Errorf("segment %d: flags %#02x, want %#02x (checksums valid: %v)", i, dg[33], want, tcpValid(dg))
		}
	}
}

// padded is p with n bytes after it that are no part of it.
func padded(p []byte, n int) []byte {
	return append(bytes.Clone(p), bytes.Repeat([]byte{0xee}, n)...)
}

// cutWritten turns what was written into dev back into the packets it
// carries: one written alone as it is, a coalesced one cut into its
// segments as the kernel would.
func cutWritten(t *testing.T, dev *fakeTUN) [][]byte {
	t.Helper()
	var out [][]byte
	for i, pkt := range dev.packets {
		if _, v := parseIPv4(pkt); v != pass || int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) {
			t.Fatalf("packet %d written, %x, is not one IPv4 packet (%v)", i, pkt, v)
		}
		h := dev.vnets[i]
		if h == (vnetHdr{}) {
			out = append(out, pkt)
			continue
		}
		tso, ok := parseGSO(pkt, h)
		if !ok {
			t.Fatalf("packet %d written, %x, with %+v: not a TSO packet", i, pkt, h)
		}
		for j := range tso.segments {
			hdr := make([]byte, tso.hdrLen)
			out = append(out, append(hdr, tso.segment(pkt, j, hdr)...))
		}
	}
	return out
}

// TestDecapTrimsTrailingBytes: a datagram whose payload runs past the inner
// packet's Total Length (a sender, or a link layer on its way, padded it)
// has its packet delivered without the extra bytes, as Linux's ip_rcv
// trims a packet to its Total Length and as flanneld's udp backend, which
// writes whatever it receives into its TUN device, has the kernel do it.
// Padded TCP segments are coalesced without their padding. A Total Length
// past the datagram's end, or shorter than the header, is still malformed.
// Before, every datagram longer than its packet was dropped as malformed.
func TestDecapTrimsTrailingBytes(t *testing.T) {
	const mss = 1000
	seg := func(i int) []byte {
		return tcpPacket("10.244.2.5", "10.244.1.5", uint16(10+i), uint32(1000+i*mss), tcpACK, payload(i*mss, mss))
	}
	lone := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 6))
	short := func(p []byte) []byte {
		p = bytes.Clone(p)
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)+1))
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
		return p
	}
	belowHeader := func(p []byte) []byte {
		p = bytes.Clone(p)
		binary.BigEndian.PutUint16(p[2:], 19)
		binary.BigEndian.PutUint16(p[10:], 0)
		binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
		return p
	}
	for _, tc := range []struct {
		name      string
		trains    [][][]byte
		want      [][]byte // the packets delivered, in order
		written   int      // writes into the device
		malformed uint64
	}{
		{"a short packet padded to a minimum frame", [][][]byte{{padded(lone, 60-len(lone))}}, [][]byte{lone}, 1, 0},
		{"a GRO train of padded segments", [][][]byte{{padded(seg(0), 2), padded(seg(1), 2), padded(seg(2), 2)}},
			[][]byte{seg(0), seg(1), seg(2)}, 1, 0},
		{"padded and plain segments across datagrams", [][][]byte{{seg(0)}, {padded(seg(1), 7)}, {seg(2)}},
			[][]byte{seg(0), seg(1), seg(2)}, 1, 0},
		{"Total Length past the end", [][][]byte{{seg(0)}, {short(seg(1))}, {padded(seg(2), 1)}},
			[][]byte{seg(0), seg(2)}, 2, 1},
		{"Total Length shorter than the header", [][][]byte{{padded(belowHeader(lone), 40)}}, nil, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestRx("198.18.0.2", tc.trains...)
			if err := w.decap(w.tbl.Load(), len(tc.trains)); err != nil {
				t.Fatal(err)
			}
			if w.local[pass] != uint64(len(tc.want)) || w.local[dropMalformed] != tc.malformed {
				t.Fatalf("counts %v: want %d forwarded, %d malformed", w.local, len(tc.want), tc.malformed)
			}
			if len(dev.packets) != tc.written {
				t.Fatalf("%d writes into the device, want %d", len(dev.packets), tc.written)
			}
			got := cutWritten(t, dev)
			if len(got) != len(tc.want) {
				t.Fatalf("%d packets delivered, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tc.want[i]) {
					t.Fatalf("packet %d:\n got %x\nwant %x", i, got[i], tc.want[i])
				}
			}
		})
	}
}

// TestEncapTrimsTrailingBytes: a packet read from the device with bytes
// after its Total Length (a packet socket on flannel0 can write one) is
// sent without them, its checksum completed over the packet alone, as a
// router's ip_rcv would trim it; one for a subnet nobody holds is still
// answered. Before, both were dropped as malformed.
func TestEncapTrimsTrailingBytes(t *testing.T) {
	pkt := ipPacket("10.244.1.5", "10.244.2.5", 17, 64, make([]byte, 100))
	copy(pkt[20:], []byte{0x30, 0x39, 0x00, 0x35, 0, 100})
	binary.BigEndian.PutUint16(pkt[26:], pseudoSum(pkt, 17, 100))
	w, dev := newTestTx(true)
	h := vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 6}
	if err := w.encap(w.tbl.Load(), w.load(h, padded(pkt, 9))); err != nil {
		t.Fatal(err)
	}
	w.m.finish()
	got := messages(w.m)
	if w.local[pass] != 1 || len(got) != 1 || len(got[0].dgs) != 1 || len(dev.packets) != 0 {
		t.Fatalf("counts %v, messages %+v, %d ICMP errors; want the packet sent and none", w.local, got, len(dev.packets))
	}
	dg := got[0].dgs[0]
	if len(dg) != len(pkt) || ^onesSum(dg[20:], pseudoSum(dg, 17, len(dg)-20)) != 0 {
		t.Fatalf("sent %d bytes for a packet of %d, UDP checksum %#04x verifies: %v",
			len(dg), len(pkt), binary.BigEndian.Uint16(dg[26:]), ^onesSum(dg[20:], pseudoSum(dg, 17, len(dg)-20)) == 0)
	}

	w, dev = newTestTx(true)
	lost := ipPacket("10.244.1.5", "10.244.77.5", 17, 64, make([]byte, 8))
	if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, padded(lost, 5))); err != nil {
		t.Fatal(err)
	}
	if w.local[dropNoRoute] != 1 || len(dev.packets) != 1 {
		t.Fatalf("to a subnet nobody holds: counts %v, %d ICMP errors; want noRoute and one", w.local, len(dev.packets))
	}
}

// TestICMPErrorQuote: an ICMP error quotes as much of the packet it is
// about as fits in 576 bytes in all (RFC 1812 4.3.2.3; Linux's icmp_send
// quotes as much), nothing past the packet's Total Length; its IP header
// has don't-fragment clear and, as Linux's, an identification that changes
// from one error to the next. Before, it quoted the header and 8 bytes,
// and every error had identification 0 without don't-fragment: fragments
// of two errors to one sender could be reassembled into one.
func TestICMPErrorQuote(t *testing.T) {
	for _, tc := range []struct {
		name string
		dst  string
		ttl  uint8
		size int
		typ  uint8
	}{
		{"net unreachable, a header and 8 bytes", "10.244.77.5", 64, 28, icmpDestUnreachable},
		{"net unreachable, 100 bytes", "10.244.77.5", 64, 100, icmpDestUnreachable},
		{"net unreachable, as much as fits", "10.244.77.5", 64, 548, icmpDestUnreachable},
		{"net unreachable, a byte more", "10.244.77.5", 64, 549, icmpDestUnreachable},
		{"TTL exceeded, 1400 bytes", "10.244.2.5", 1, 1400, icmpTimeExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := ipPacket("10.244.1.5", tc.dst, 17, tc.ttl, payload(0, tc.size-20))
			w, dev := newTestTx(true)
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, padded(pkt, 3))); err != nil {
				t.Fatal(err)
			}
			if len(dev.packets) != 1 {
				t.Fatalf("%d ICMP errors written back, want 1", len(dev.packets))
			}
			e := dev.packets[0]
			quoted := min(len(pkt), 576-28)
			if len(e) != 28+quoted || int(binary.BigEndian.Uint16(e[2:4])) != len(e) || checksum(e[:20]) != 0 || checksum(e[20:]) != 0 {
				t.Fatalf("error of %d bytes (Total Length %d), checksums %#04x %#04x; want %d bytes, valid checksums",
					len(e), binary.BigEndian.Uint16(e[2:4]), checksum(e[:20]), checksum(e[20:]), 28+quoted)
			}
			if e[20] != tc.typ || !bytes.Equal(e[28:], pkt[:quoted]) {
				t.Fatalf("type %d, quote % x; want type %d quoting the first %d bytes", e[20], e[28:min(len(e), 60)], tc.typ, quoted)
			}
		})
	}

	t.Run("identification", func(t *testing.T) {
		w, dev := newTestTx(true)
		lost := ipPacket("10.244.1.5", "10.244.77.5", 17, 64, make([]byte, 8))
		for range 3 {
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, lost)); err != nil {
				t.Fatal(err)
			}
		}
		ids := map[uint16]bool{}
		for i, e := range dev.packets {
			if binary.BigEndian.Uint16(e[6:8]) != 0 || e[1] != 0xc0 || e[8] != 64 {
				t.Fatalf("error %d: flags and offset %#04x, TOS %#02x, TTL %d; want 0, 0xc0, 64", i, e[6:8], e[1], e[8])
			}
			ids[binary.BigEndian.Uint16(e[4:6])] = true
		}
		if len(dev.packets) != 3 || len(ids) != 3 {
			t.Fatalf("%d errors with %d identifications, want 3 of each", len(dev.packets), len(ids))
		}
	})
}
