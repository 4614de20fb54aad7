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
