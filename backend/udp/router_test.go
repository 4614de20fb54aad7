package udp

// Router behaviour of the datapath checked against the kernel's and the
// RFCs' (RFC 1812, RFC 792, RFC 1122): what the TSO segmenter puts on each
// segment, and what the coalescer may merge.

import "testing"

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

// TestDecapBadTCPChecksumNotCoalesced: a received TCP segment whose
// checksum does not verify is written into the device alone and as it came,
// for the receiving TCP to drop it (TcpInCsumErrors), as flanneld's udp
// backend writes every packet; it neither heads nor joins a coalesced
// packet. Before, it was merged with its neighbours into a TSO packet
// written with NEEDS_CSUM, which the kernel takes as checksummed already:
// its corrupt payload reached the socket as good data. The kernel's own GRO
// verifies every segment's checksum before it merges it.
func TestDecapBadTCPChecksumNotCoalesced(t *testing.T) {
	const mss = 1000
	seg := func(i int) []byte {
		return tcpPacket("10.244.2.5", "10.244.1.5", uint16(10+i), uint32(1000+i*mss), tcpACK, payload(i*mss, mss))
	}
	corrupt := func(p []byte) []byte { p[len(p)-3] ^= 0x20; return p }
	for _, tc := range []struct {
		name  string
		train [][]byte
		bad   int
		want  []int // segments per packet written, in order
	}{
		{"the head", [][]byte{corrupt(seg(0)), seg(1), seg(2)}, 0, []int{1, 2}},
		{"in the middle", [][]byte{seg(0), seg(1), corrupt(seg(2)), seg(3), seg(4)}, 2, []int{2, 1, 2}},
		{"the last", [][]byte{seg(0), seg(1), corrupt(seg(2))}, 2, []int{2, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestRx("198.18.0.2", tc.train)
			if err := w.decap(w.tbl.Load(), 1); err != nil {
				t.Fatal(err)
			}
			if w.local[pass] != uint64(len(tc.train)) {
				t.Fatalf("counts %v: want all %d forwarded", w.local, len(tc.train))
			}
			if len(dev.packets) != len(tc.want) {
				t.Fatalf("%d packets written, want %d", len(dev.packets), len(tc.want))
			}
			k := 0
			for i, pkt := range dev.packets {
				n := 1
				if tso, ok := parseTSO(pkt, dev.vnets[i]); ok {
					n = tso.segments
				}
				if n != tc.want[i] {
					t.Fatalf("packet %d: %d segments, want %d", i, n, tc.want[i])
				}
				if k == tc.bad && (dev.vnets[i] != vnetHdr{} || string(pkt) != string(tc.train[k])) {
					t.Fatalf("packet %d, the corrupt segment, written with virtio header %+v, changed: %v",
						i, dev.vnets[i], string(pkt) != string(tc.train[k]))
				}
				k += n
			}
		})
	}
}
