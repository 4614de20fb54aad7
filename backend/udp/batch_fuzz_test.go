package udp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FuzzDecapBatch feeds decap whole recvmmsg batches: up to rxMessages
// messages from two peers (one holding two subnets) and a stranger, each a
// GRO train of TCP segments of a few flows whose sequence numbers run on
// across messages, UDP datagrams of a few flows (some without a checksum),
// packets with IPv4 options, arbitrary bytes,
// truncated or empty messages, some with a segment padded, corrupted (with
// or without its checksums mended), cut short, out of sequence or split at
// a wrong GRO size; the device refuses some writes, and may close under
// the worker. Built from a short program so that most inputs hold valid,
// coalescible segments, which random bytes almost never are.
//
// Checked against a plain reference (each datagram cut and judged alone
// by accept, no coalescing): every write is one IPv4 packet of exactly its
// Total Length; a coalesced one is a TSO or USO packet the kernel can
// complete (its TCP or UDP checksum, once completed, verifies; a USO packet
// holds at most 64 datagrams, as Linux takes them); cutting what was written
// gives back exactly the packets accepted, in the order received, written
// alone ones byte for byte and coalesced ones but for identification and
// checksums (those cut verify; a received one that did not, a payload byte
// flipped, is coalesced too, as the outer UDP checksum the kernel checked
// speaks for it, but no UDP datagram without a checksum is); the
// counts per verdict are the reference's, forwarded ones are what the
// device took, refused ones what it did not or what came after it closed,
// and the write errors are the writes it refused.
func FuzzDecapBatch(f *testing.F) {
	// Records of recordLen bytes; see batchProgram.
	f.Add([]byte{0, 0, 3, 60, 0, 0, 1, 1, 3, 60, 0, 0, 0, 0, 2, 60, 0, 0}, []byte{}, uint16(0), uint8(0))
	f.Add([]byte{0, 0, 7, 100, 0, 0, 0, 4, 7, 100, 0, 0, 0, 0, 7, 100, 1<<3 | 2, 5, 2, 0, 1, 10, 0, 0}, []byte{1, 2, 3}, uint16(0), uint8(0))
	f.Add([]byte{0, 0, 4, 40, 3<<3 | 1, 9, 3, 0, 2, 40, 0, 0, 0, 0, 4, 40, 2<<3 | 2, 0}, []byte{0x40}, uint16(2), uint8(0))
	f.Add([]byte{0, 0, 5, 50, 5<<3 | 2, 0, 7 << 2, 0, 5, 50, 0, 0, 4 << 2, 0, 9, 0, 0, 30}, []byte("arbitrary bytes in a datagram"), uint16(0), uint8(2))
	//lint:ignore SA4016 byte 4 of a record is how<<3 | which, and "| 0" is which 0
	f.Add([]byte{0, 0, 6, 80, 6<<3 | 1, 0, 0, 0, 6, 80, 7<<3 | 0, 77, 5 << 2, 0, 0, 0, 0, 0, 6 << 2, 0, 0, 0, 0, 0}, []byte{}, uint16(1), uint8(0))
	// UDP: trains of one flow across messages, the last datagram shorter,
	// one without checksums, one with a payload byte flipped.
	f.Add([]byte{3 << 2, 0, 7, 100, 0, 0, 3 << 2, 0, 7 | 8, 100, 0, 0, 3<<2 | 0x40, 0, 3, 100, 0, 0, 3 << 2, 0, 3, 100, 2<<3 | 1, 9}, []byte{}, uint16(0), uint8(0))
	f.Add([]byte{3 << 2, 0, 7, 50, 0, 0, 3 << 2, 2, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 0, 0,
		3 << 2, 0, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 0, 0, 3 << 2, 0, 7, 50, 3<<3 | 2, 5}, []byte{}, uint16(0), uint8(0))
	// UDP: a train with don't-fragment (identifications free), then two
	// without, the second's second datagram's identification changed.
	f.Add([]byte{3<<2 | 0x80, 0, 3, 100, 0, 0, 3 << 2, 0, 3, 100, 0, 0, 3 << 2, 0, 3, 100, 3<<3 | 1, 4}, []byte{}, uint16(0), uint8(0))
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.4.0/25"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
	var ptr atomic.Pointer[table]
	ptr.Store(tbl)
	dev := &flakyTUN{}
	c := &counters{}
	// One worker for every input: its buffers are most of an input's cost.
	w := newRxWorker(&udpSock{}, dev, &ptr, c, heapAlloc)
	w.uso = true
	f.Fuzz(func(t *testing.T, prog, raw []byte, fail uint16, closeAt uint8) {
		*dev = flakyTUN{fail: fail, closeAt: int(closeAt)}
		clear(w.local[:])
		c.tunErrors.Store(0)
		n := batchProgram(w, prog, raw)
		if n == 0 {
			return
		}

		// The reference.
		var accepted [][]byte
		var want [numVerdicts]uint64
		for i := range n {
			ln, src, seg, trunc := w.m.received(i)
			if trunc || ln == 0 {
				want[dropMalformed]++
				continue
			}
			if seg <= 0 || seg > ln {
				seg = ln
			}
			for off := 0; off < ln; off += seg {
				p, v := tbl.accept(src, w.rx[i][off:min(off+seg, ln)])
				want[v]++
				if v == pass {
					accepted = append(accepted, bytes.Clone(p))
				}
			}
		}

		err := w.decap(tbl, n)
		closed := dev.closeAt > 0 && dev.writes >= dev.closeAt
		if closed != (err != nil) || err != nil && !errors.Is(err, errQueueClosed) {
			t.Fatalf("decap: %v after %d writes, the device closing at write %d", err, dev.writes, dev.closeAt)
		}
		if w.co.pending() {
			t.Fatal("decap returned with a packet still being built")
		}

		// Cut every write, taken or not, back into packets.
		var out [][]byte
		var coalesced []bool
		var took, refused uint64
		for i, pkt := range dev.packets {
			if h, v := parseIPv4(pkt); v != pass || h.tlen != len(pkt) {
				t.Fatalf("write %d, %x, is not one IPv4 packet (%v)", i, pkt, v)
			}
			segs := 1
			h := dev.vnets[i]
			if h == (vnetHdr{}) {
				out = append(out, pkt)
				coalesced = append(coalesced, false)
			} else {
				tso, ok := parseGSO(pkt, h)
				csumOffset, valid := uint16(tcpCsumOffset), tcpValid
				if tso.udp {
					csumOffset, valid = udpCsumOffset, udpValid
				}
				if !ok || h.flags != vnetNeedsCsum || int(h.hdrLen) != tso.hdrLen || h.csumStart != 20 || h.csumOffset != csumOffset ||
					checksum(pkt[:20]) != 0 || tso.segments < 2 || tso.udp && tso.segments > 64 {
					t.Fatalf("write %d, %x, with %+v: not a TSO or USO packet the kernel can finish", i, pkt[:min(len(pkt), 60)], h)
				}
				done := bytes.Clone(pkt)
				if !finishChecksum(done, h.csumStart, h.csumOffset) || !valid(done) {
					t.Fatalf("write %d: its checksum, completed, does not verify", i)
				}
				for j := range tso.segments {
					hdr := make([]byte, tso.hdrLen)
					out = append(out, append(hdr, tso.segment(pkt, j, hdr)...))
					coalesced = append(coalesced, true)
				}
				segs = tso.segments
			}
			if dev.taken[i] {
				took += uint64(segs)
			} else {
				refused += uint64(segs)
			}
		}
		if len(out) > len(accepted) {
			t.Fatalf("%d packets written, %d accepted", len(out), len(accepted))
		}
		if !closed && len(out) != len(accepted) {
			t.Fatalf("%d packets written, %d accepted", len(out), len(accepted))
		}
		for i := range out {
			if !coalesced[i] {
				if !bytes.Equal(out[i], accepted[i]) {
					t.Fatalf("packet %d, written alone:\n got %x\nwant %x", i, out[i], accepted[i])
				}
				continue
			}
			valid := tcpValid
			if accepted[i][9] == protoUDP {
				valid = udpValid
				if accepted[i][26]|accepted[i][27] == 0 {
					t.Fatalf("packet %d, a UDP datagram without a checksum, coalesced", i)
				}
			}
			if !valid(out[i]) || !bytes.Equal(maskChecksums(out[i]), maskChecksums(accepted[i])) {
				t.Fatalf("packet %d, coalesced (checksums valid: received %v, cut %v):\n got %x\nwant %x",
					i, valid(accepted[i]), valid(out[i]), out[i], accepted[i])
			}
		}

		// The counts: what the device took is forwarded; what it refused,
		// and every packet accepted after it closed, refused.
		got := w.local
		if got[pass] != took || got[pass]+got[dropRefused] != uint64(len(accepted)) ||
			!closed && got[dropRefused] != refused {
			t.Fatalf("counts %v: %d segments taken, %d refused, %d accepted", got, took, refused, len(accepted))
		}
		got[pass], got[dropRefused], want[pass] = 0, 0, 0
		if got != want {
			t.Fatalf("drops %v, want %v", got, want)
		}
		if e := c.tunErrors.Load(); e != uint64(dev.errnos) {
			t.Fatalf("%d write errors counted, the device refused %d writes", e, dev.errnos)
		}
	})
}

// maskChecksums is p, a TCP/IPv4 or UDP/IPv4 packet, with its IPv4 and
// TCP or UDP checksums zeroed, and its identification when don't-fragment
// is set: cutting a coalesced packet numbers them up from its head's, which
// gives back a packet's own only where they were in sequence, as they must
// be where don't-fragment is clear.
func maskChecksums(p []byte) []byte {
	p = bytes.Clone(p)
	at := int(p[0]&0x0f)*4 + tcpCsumOffset
	if p[9] == protoUDP {
		at = int(p[0]&0x0f)*4 + udpCsumOffset
	}
	if p[6]&(ipDF>>8) != 0 {
		clear(p[4:6])
	}
	clear(p[10:12])
	clear(p[at : at+2])
	return p
}

// flakyTUN is a tunWriter that keeps every write, taken or not: it refuses
// with EIO those whose bit (counting from 0) is set in fail, and closes at
// write closeAt (counting from 1; 0: never), refusing that one and every
// later one as a closed queue.
type flakyTUN struct {
	fakeTUN
	fail    uint16
	closeAt int
	writes  int
	errnos  int
	taken   []bool
}

func (f *flakyTUN) write(parts [][]byte) error {
	f.writes++
	if err := f.fakeTUN.write(parts); err != nil {
		return err
	}
	switch {
	case f.closeAt > 0 && f.writes >= f.closeAt:
		f.taken = append(f.taken, false)
		return errQueueClosed
	case f.writes <= 16 && f.fail&(1<<(f.writes-1)) != 0:
		f.taken = append(f.taken, false)
		f.errnos++
		return unix.EIO
	}
	f.taken = append(f.taken, true)
	return nil
}

// recordLen is the length of one message's record in a batch program.
const recordLen = 6

// batchProgram sets up w's received batch as prog describes it, one message
// per record (up to rxMessages), and returns how many messages it holds.
// Record bytes:
//
//	0: bits 0-1 the sender: 198.18.0.2 (10.244.2.0/24, 10.244.4.0/25),
//	   198.18.0.3 (10.244.3.0/24), 198.18.0.99 (no peer), or 198.18.0.2
//	   sending from its own address; bits 2-4 what the message holds:
//	   0, 1 TCP segments, 2 TCP segments with IPv4 options, 3 UDP
//	   datagrams, 4 arbitrary bytes from raw, 5 truncated (MSG_TRUNC),
//	   6 empty, 7 TCP segments, PSH on the last; bit 5 an inner source in
//	   the other peer's subnet; bit 6 UDP datagrams without a checksum;
//	   bit 7 UDP datagrams with don't-fragment and identification 0 (as
//	   Linux sends from an unconnected socket), else without, their
//	   identifications counting up along the flow (as from one sender).
//	1: the flow: bit 0 source host, bit 1 source port, bit 2 destination
//	   host, bit 3 peer 2's second subnet.
//	2: bits 0-2 segments less one; bit 3 the last one shorter.
//	3: the segment payload, in 4-byte units (0: none).
//	4: bits 0-2 the segment changed; bits 3-5 how: 0 not, 1 padded,
//	   2 a payload byte flipped, 3 a header byte changed and the
//	   checksums mended, 4 a header byte changed, 5 a sequence gap, 6 a
//	   Total Length one past its end, 7 the GRO segment size set to byte 5.
//	5: the change's parameter.
func batchProgram(w *rxWorker, prog, raw []byte) int {
	senders := [4]string{"198.18.0.2", "198.18.0.3", "198.18.0.99", "198.18.0.2"}
	next := map[string]uint32{}
	rawAt := 0
	n := min(len(prog)/recordLen, rxMessages)
	w.m.prepareRecv(w.rx[:max(n, 1)])
	for i := range n {
		r := prog[i*recordLen : (i+1)*recordLen]
		sender, kind := r[0]&3, r[0]>>2&7
		src := [2]string{"10.244.2.5", "10.244.2.6"}[r[1]&1]
		switch {
		case sender == 1:
			src = [2]string{"10.244.3.5", "10.244.3.6"}[r[1]&1]
		case sender == 3:
			src = "198.18.0.2"
		case r[1]&8 != 0:
			src = [2]string{"10.244.4.5", "10.244.4.6"}[r[1]&1]
		}
		if r[0]&0x20 != 0 {
			src = [2]string{"10.244.3.9", "10.244.2.9"}[min(sender, 1)]
		}
		dst := [2]string{"10.244.1.5", "10.244.1.6"}[r[1]>>2&1]
		sport := 40000 + uint16(r[1]>>1&1)
		segs, size := 1+int(r[2]&7), 4*int(r[3])
		which, how, param := int(r[4]&7), r[4]>>3&7, r[5]
		flow := senders[sender] + src + dst + string(rune(sport))
		if how == 5 && which < segs {
			next[flow] += 1000
		}
		var pkts [][]byte
		for j := range segs {
			n := size
			if j == segs-1 && r[2]&8 != 0 {
				n /= 2
			}
			switch kind {
			case 3:
				p := ipPacket(src, dst, protoUDP, 64, append(make([]byte, udpHeaderLen), payload(j, n)...))
				if r[0]&0x80 != 0 {
					binary.BigEndian.PutUint16(p[4:], 0)
					binary.BigEndian.PutUint16(p[6:], ipDF)
				} else {
					binary.BigEndian.PutUint16(p[4:], uint16(next[flow]))
					next[flow]++
				}
				binary.BigEndian.PutUint16(p[10:], 0)
				binary.BigEndian.PutUint16(p[10:], checksum(p[:20]))
				binary.BigEndian.PutUint16(p[20:], sport)
				binary.BigEndian.PutUint16(p[22:], 4433)
				binary.BigEndian.PutUint16(p[24:], uint16(udpHeaderLen+n))
				if r[0]&0x40 == 0 {
					p[20+udpCsumOffset] = 1 // for mendL4 to set
					mendL4(p)
				}
				pkts = append(pkts, p)
			case 4:
				b := make([]byte, n)
				for k := range b {
					if len(raw) > 0 {
						b[k] = raw[rawAt%len(raw)]
						rawAt++
					}
				}
				pkts = append(pkts, b)
			default:
				flags := uint8(tcpACK)
				if kind == 7 && j == segs-1 {
					flags |= tcpPSH
				}
				seq := next[flow]
				p := tcpPacket(src, dst, uint16(j), seq, flags, payload(int(seq), n))
				binary.BigEndian.PutUint16(p[20:], sport)
				if kind == 2 {
					p = withOptions(p)
				}
				mendL4(p)
				next[flow] = seq + uint32(n)
				pkts = append(pkts, p)
			}
		}
		gro := 0
		if which < len(pkts) {
			p := pkts[which]
			switch how {
			case 1:
				pkts[which] = append(p, bytes.Repeat([]byte{0xee}, 1+int(param&15))...)
			case 2:
				if len(p) > 0 {
					p[len(p)-1-int(param)%len(p)] ^= 0x20
				}
			case 3, 4:
				if len(p) > 0 {
					x := byte(1)
					if len(raw) > 0 {
						x = raw[int(param)%len(raw)] | 1
					}
					p[int(param)%min(len(p), 60)] ^= x
					if how == 3 && len(p) >= 20 && p[0]>>4 == 4 {
						mendL4(p)
					}
				}
			case 6:
				if len(p) >= 20 {
					binary.BigEndian.PutUint16(p[2:], uint16(len(p)+1))
					mendL4(p)
				}
			case 7:
				gro = int(param)
			}
		}
		// The message: its packets back to back, as GRO hands over a
		// train, with the first one's length as its segment size.
		ln := 0
		for _, p := range pkts {
			ln += copy(w.rx[i][ln:], p)
		}
		if gro == 0 && len(pkts) > 0 {
			gro = len(pkts[0])
		}
		h := &w.m.hdrs[i]
		h.Len = uint32(ln)
		if kind == 5 {
			h.Hdr.Flags = unix.MSG_TRUNC
		}
		if kind == 6 {
			h.Len = 0
		}
		w.m.names[i].Addr = netip.MustParseAddr(senders[sender]).As4()
		ctrl := w.m.ctrl[i*ctrlSpace:]
		cm := (*unix.Cmsghdr)(unsafe.Pointer(&ctrl[0]))
		cm.Level, cm.Type = unix.SOL_UDP, unix.UDP_GRO
		cm.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(ctrl[unix.CmsgLen(0):], uint32(gro))
		h.Hdr.SetControllen(unix.CmsgSpace(4))
	}
	return n
}

// withOptions is the TCP/IPv4 packet p with 4 bytes of IPv4 options (NOPs)
// after its header; its checksums are for mendL4 to set.
func withOptions(p []byte) []byte {
	q := make([]byte, 0, len(p)+4)
	q = append(q, p[:20]...)
	q = append(q, 1, 1, 1, 1)
	q = append(q, p[20:]...)
	q[0] = 0x46
	binary.BigEndian.PutUint16(q[2:], uint16(len(q)))
	return q
}

// mendL4 sets the IPv4 header checksum of p and, if p holds a TCP or UDP
// header (by its own header fields), its checksum (a UDP one of 0 as
// 0xffff), over what its Total Length covers; whatever p holds, it reads
// nothing past its end. A UDP checksum of 0 (none) is left as it is.
func mendL4(p []byte) {
	ihl := int(p[0]&0x0f) * 4
	if ihl < 20 || ihl > len(p) {
		return
	}
	binary.BigEndian.PutUint16(p[10:], 0)
	binary.BigEndian.PutUint16(p[10:], checksum(p[:ihl]))
	end := min(int(binary.BigEndian.Uint16(p[2:])), len(p))
	if p[9] == protoUDP && end >= ihl+udpHeaderLen {
		udp := p[ihl:end]
		if udp[udpCsumOffset]|udp[udpCsumOffset+1] == 0 {
			return
		}
		binary.BigEndian.PutUint16(udp[udpCsumOffset:], 0)
		c := ^onesSum(udp, pseudoSum(p, protoUDP, len(udp)))
		if c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(udp[udpCsumOffset:], c)
		return
	}
	if p[9] != protoTCP || end < ihl+tcpMinHeader {
		return
	}
	tcp := p[ihl:end]
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], 0)
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], ^onesSum(tcp, pseudoSum(p, protoTCP, len(tcp))))
}
