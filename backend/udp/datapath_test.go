package udp

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// fakeTUN is a tunWriter that keeps every packet written into it, with its
// virtio header.
type fakeTUN struct {
	packets [][]byte
	vnets   []vnetHdr
}

func (f *fakeTUN) write(parts [][]byte) error {
	var b []byte
	for _, p := range parts[1:] {
		b = append(b, p...)
	}
	f.packets = append(f.packets, b)
	f.vnets = append(f.vnets, decodeVnet(parts[0]))
	return nil
}

func testTable() *table {
	return newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
}

// be32 is the IPv4 address a as the datapath's tables key it.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// newTestTx is a tx worker over a fake device and a socket that is never
// used for I/O.
func newTestTx(gso bool) (*txWorker, *fakeTUN) {
	dev := &fakeTUN{}
	s := &udpSock{}
	s.gso.Store(gso)
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	return newTxWorker(nil, dev, s, &tbl, &counters{}, heapAlloc), dev
}

// load puts pkt with the virtio header h into the worker's buffer as a TUN
// read would and returns what encap takes.
func (w *txWorker) load(h vnetHdr, pkt []byte) []byte {
	h.encode(w.buf)
	n := copy(w.buf[vnetHdrLen:], pkt)
	return w.buf[:vnetHdrLen+n]
}

// messages describes the batch built in m: per message, the destination,
// its datagrams (each the concatenation of its two iovecs) and the GSO
// segment size when there is one.
type message struct {
	dst  netip.AddrPort
	dgs  [][]byte
	gso  int
	iovs int
}

func messages(m *mmsg) []message {
	var out []message
	for i := range m.n {
		h := &m.hdrs[i].Hdr
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(h.Name))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		msg := message{dst: netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), iovs: int(h.Iovlen)}
		iovs := unsafe.Slice(h.Iov, h.Iovlen)
		for j := 0; j+1 < len(iovs); j += 2 {
			var dg []byte
			for _, v := range iovs[j : j+2] {
				if v.Len > 0 {
					dg = append(dg, unsafe.Slice(v.Base, v.Len)...)
				}
			}
			msg.dgs = append(msg.dgs, dg)
		}
		if h.Controllen > 0 {
			c := unsafe.Slice(h.Control, h.Controllen)
			msg.gso = int(binary.NativeEndian.Uint16(c[unix.CmsgLen(0):]))
		}
		out = append(out, msg)
	}
	return out
}

func TestEncapOnePacket(t *testing.T) {
	p2 := netip.MustParseAddrPort("198.18.0.2:8285")
	udpPkt := func(dst string, ttl uint8) []byte {
		return ipPacket("10.244.1.5", dst, 17, ttl, make([]byte, 100))
	}
	// A UDP packet whose checksum the device left to us: the pseudo
	// header's sum in the checksum field.
	partial := udpPkt("10.244.2.5", 64)
	copy(partial[20:], []byte{0x30, 0x39, 0x00, 0x35, 0, 100})
	binary.BigEndian.PutUint16(partial[26:], pseudoSum(partial, 17, 100))
	for _, tc := range []struct {
		name   string
		h      vnetHdr
		pkt    []byte
		sent   bool
		icmp   int
		verd   verdict
		csumOK bool
	}{
		{"plain", vnetHdr{}, udpPkt("10.244.2.5", 64), true, 0, pass, false},
		{"checksum left to us", vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 6}, partial, true, 0, pass, true},
		{"checksum offsets outside", vnetHdr{flags: vnetNeedsCsum, csumStart: 20, csumOffset: 200}, partial, false, 0, dropMalformed, false},
		// The checksum would be written over the destination address
		// after the packet was routed by it: FuzzEncap's input sent a
		// packet for 23.203.2.5 to 10.244.2.0/24's peer.
		{"checksum inside the IPv4 header", vnetHdr{flags: vnetNeedsCsum, csumStart: 16, csumOffset: 0}, partial, false, 0, dropMalformed, false},
		{"unknown subnet", vnetHdr{}, udpPkt("10.244.77.5", 64), false, 1, dropNoRoute, false},
		{"TTL 1", vnetHdr{}, udpPkt("10.244.2.5", 1), false, 1, dropTTL, false},
		{"unknown GSO type", vnetHdr{gsoType: 3, gsoSize: 50}, udpPkt("10.244.2.5", 64), false, 0, dropMalformed, false},
		{"short of a virtio header", vnetHdr{}, nil, false, 0, dropMalformed, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(true)
			b := w.load(tc.h, tc.pkt)
			if tc.pkt == nil {
				b = b[:vnetHdrLen-1]
			}
			if err := w.encap(w.tbl.Load(), b); err != nil {
				t.Fatal(err)
			}
			w.m.finish()
			got := messages(w.m)
			if w.local[tc.verd] != 1 {
				t.Fatalf("counts %v, want one %v", w.local, tc.verd)
			}
			if len(dev.packets) != tc.icmp {
				t.Fatalf("%d ICMP errors written back, want %d", len(dev.packets), tc.icmp)
			}
			if !tc.sent {
				if len(got) != 0 {
					t.Fatalf("sent %+v", got)
				}
				return
			}
			if len(got) != 1 || got[0].dst != p2 || len(got[0].dgs) != 1 || got[0].gso != 0 || len(got[0].dgs[0]) != len(tc.pkt) {
				t.Fatalf("messages %+v", got)
			}
			dg := got[0].dgs[0]
			if dg[8] != 63 || checksum(dg[:20]) != 0 {
				t.Fatalf("TTL %d, header checksum %#x: want 63 and a valid checksum", dg[8], checksum(dg[:20]))
			}
			if tc.csumOK && ^onesSum(dg[20:], pseudoSum(dg, 17, len(dg)-20)) != 0 {
				t.Fatalf("UDP checksum %#x does not check", binary.BigEndian.Uint16(dg[26:]))
			}
		})
	}
}

// TestEncapICMPErrorLimits: no ICMP error goes back about a packet to or
// from what is a broadcast address at the subnet length (/24 here), and a
// flood of packets for a subnet nobody holds gets at most a burst of
// errors and then as many as the rate allows, not one each.
func TestEncapICMPErrorLimits(t *testing.T) {
	udpPkt := func(src, dst string) []byte { return ipPacket(src, dst, 17, 64, make([]byte, 8)) }
	for _, tc := range []struct {
		name string
		pkt  []byte
		icmp int
	}{
		{"to a subnet nobody holds", udpPkt("10.244.1.5", "10.244.99.7"), 1},
		{"to its broadcast address", udpPkt("10.244.1.5", "10.244.99.255"), 0},
		{"to the network's broadcast address", udpPkt("10.244.1.5", "10.244.255.255"), 0},
		{"from our subnet's broadcast address", udpPkt("10.244.1.255", "10.244.99.7"), 0},
		{"TTL 1 from a broadcast address", ipPacket("10.244.1.255", "10.244.2.5", 17, 1, make([]byte, 8)), 0},
		{"from our device's address", udpPkt("10.244.1.0", "10.244.99.7"), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(true)
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if w.local[pass] != 0 {
				t.Fatalf("counts %v: the packet was forwarded", w.local)
			}
			if len(dev.packets) != tc.icmp {
				t.Fatalf("%d ICMP errors written back, want %d", len(dev.packets), tc.icmp)
			}
		})
	}

	t.Run("flood", func(t *testing.T) {
		const flood = 5000
		w, dev := newTestTx(true)
		pkt := udpPkt("10.244.1.5", "10.244.99.7")
		start := time.Now()
		for range flood {
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
				t.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		if w.local[dropNoRoute] != flood {
			t.Fatalf("counts %v, want %d noRoute", w.local, flood)
		}
		// The bucket starts full; the worker's clock runs within start
		// and start+elapsed, so no more can have been earned.
		most := icmpBurst + int(elapsed/icmpInterval) + 1
		if n := len(dev.packets); n < icmpBurst || n > most {
			t.Fatalf("%d ICMP errors written back for %d packets in %v, want %d to %d", n, flood, elapsed, icmpBurst, most)
		}
	})

	t.Run("counted", func(t *testing.T) {
		w, dev := newTestTx(true)
		now := time.Unix(1000, 0)
		w.now = func() time.Time { return now }
		pkt := udpPkt("10.244.1.5", "10.244.99.7")
		for range 2 * icmpBurst {
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
				t.Fatal(err)
			}
		}
		if len(dev.packets) != icmpBurst || w.icmpLimited != icmpBurst {
			t.Fatalf("%d ICMP errors written, %d held back; want %d each", len(dev.packets), w.icmpLimited, icmpBurst)
		}
		if w.local[dropNoRoute] != 2*icmpBurst {
			t.Fatalf("counts %v: every packet is still a noRoute drop", w.local)
		}
	})
}

// TestEncapICMPErrorBroadcastLengths: whether an address is a subnet's
// broadcast address is judged at the length of the subnet that holds it,
// ours or a peer's, as leases of several lengths live side by side once
// SubnetLen changed; a destination in no known subnet at ours. A source
// outside every known subnet (a node's own address, whose underlay subnet
// the cluster does not know) is only tested for being a broadcast address
// at all. Before, every address was tested at our lease's length.
func TestEncapICMPErrorBroadcastLengths(t *testing.T) {
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/25"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")}, // leased before SubnetLen became 25
		{Subnet: netip.MustParsePrefix("10.244.3.0/26"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
	expiring := func(src, dst string) []byte { return ipPacket(src, dst, 17, 1, make([]byte, 8)) }
	unroutable := func(src, dst string) []byte { return ipPacket(src, dst, 17, 64, make([]byte, 8)) }
	for _, tc := range []struct {
		name string
		pkt  []byte
		icmp int
	}{
		{"to a host of a /24 peer, .127", expiring("10.244.1.5", "10.244.2.127"), 1},
		{"to a /24 peer's broadcast address", expiring("10.244.1.5", "10.244.2.255"), 0},
		{"to a /26 peer's broadcast address", expiring("10.244.1.5", "10.244.3.63"), 0},
		{"to a host of a /26 peer", expiring("10.244.1.5", "10.244.3.62"), 1},
		{"to our /25's broadcast address", unroutable("10.244.1.5", "10.244.1.127"), 0},
		{"to a subnet nobody holds", unroutable("10.244.1.5", "10.244.99.7"), 1},
		{"to an address nobody holds, broadcast at our length", unroutable("10.244.1.5", "10.244.99.127"), 0},
		{"from our /25's broadcast address", unroutable("10.244.1.127", "10.244.99.7"), 0},
		{"from a host of a /24 peer, .127", expiring("10.244.2.127", "10.244.3.5"), 1},
		{"from a /24 peer's broadcast address", expiring("10.244.2.255", "10.244.3.5"), 0},
		{"from a node address outside the network, .255", unroutable("10.0.1.255", "10.244.77.5"), 1},
		{"from a node address outside the network, .255, TTL 1", expiring("10.0.1.255", "10.244.2.5"), 1},
		{"from the limited broadcast address", unroutable("255.255.255.255", "10.244.77.5"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(true)
			w.tbl.Store(tbl)
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if w.local[pass] != 0 {
				t.Fatalf("counts %v: the packet was forwarded", w.local)
			}
			if len(dev.packets) != tc.icmp {
				t.Fatalf("%d ICMP errors written back, want %d", len(dev.packets), tc.icmp)
			}
		})
	}
}

// tcpPacket is a TCP/IPv4 packet with valid checksums, don't-fragment set.
func tcpPacket(src, dst string, id uint16, seq uint32, flags uint8, payload []byte) []byte {
	b := make([]byte, 40+len(payload))
	b[0] = 0x45
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], ipDF)
	b[8], b[9] = 64, protoTCP
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	binary.BigEndian.PutUint16(b[10:], checksum(b[:20]))
	tcp := b[20:]
	binary.BigEndian.PutUint16(tcp[0:], 40000)
	binary.BigEndian.PutUint16(tcp[2:], 5201)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], 777)
	tcp[12], tcp[13] = 5<<4, flags
	binary.BigEndian.PutUint16(tcp[14:], 500)
	copy(tcp[20:], payload)
	binary.BigEndian.PutUint16(tcp[16:], ^onesSum(tcp, pseudoSum(b, protoTCP, len(tcp))))
	return b
}

// payload is n bytes of a pattern that starts at off.
func payload(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte((off + i) * 7)
	}
	return b
}

// tcpValid reports whether pkt's IPv4 and TCP checksums check; its IPv4
// header may carry options.
func tcpValid(pkt []byte) bool {
	ihl := int(pkt[0]&0x0f) * 4
	return checksum(pkt[:ihl]) == 0 && ^onesSum(pkt[ihl:], pseudoSum(pkt, protoTCP, len(pkt)-ihl)) == 0
}

// TestEncapTSO: a TSO packet goes out as its segments, each a whole TCP
// packet with its own length, identification, sequence number and
// checksums, FIN and PSH only on the last, in one GSO message.
func TestEncapTSO(t *testing.T) {
	const mss = 1000
	for _, size := range []int{5 * mss, 4*mss + 500, mss + 1} {
		w, _ := newTestTx(true)
		tso := tcpPacket("10.244.1.5", "10.244.2.5", 100, 5000, tcpACK|tcpPSH|tcpFIN, payload(0, size))
		// As the device hands it over: checksum field holding the
		// pseudo header's sum, total length of the whole.
		binary.BigEndian.PutUint16(tso[36:], pseudoSum(tso, protoTCP, 20))
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: 40, gsoSize: mss, csumStart: 20, csumOffset: 16}
		if err := w.encap(w.tbl.Load(), w.load(h, tso)); err != nil {
			t.Fatal(err)
		}
		w.m.finish()
		got := messages(w.m)
		n := (size + mss - 1) / mss
		if len(got) != 1 || len(got[0].dgs) != n || (n > 1 && got[0].gso != 40+mss) {
			t.Fatalf("size %d: messages %+v, want one of %d segments", size, got, n)
		}
		if w.local[pass] != uint64(n) {
			t.Fatalf("size %d: counted %v", size, w.local)
		}
		for i, dg := range got[0].dgs {
			want := tcpPacket("10.244.1.5", "10.244.2.5", 100+uint16(i), 5000+uint32(i*mss), tcpACK, payload(i*mss, min(mss, size-i*mss)))
			if i == n-1 {
				want = tcpPacket("10.244.1.5", "10.244.2.5", 100+uint16(i), 5000+uint32(i*mss), tcpACK|tcpPSH|tcpFIN, payload(i*mss, size-i*mss))
			}
			want[8]-- // the router's TTL step
			binary.BigEndian.PutUint16(want[10:], 0)
			binary.BigEndian.PutUint16(want[10:], checksum(want[:20]))
			if string(dg) != string(want) {
				t.Fatalf("size %d: segment %d:\n got %x\nwant %x", size, i, dg[:40], want[:40])
			}
			if !tcpValid(dg) {
				t.Fatalf("size %d: segment %d: checksums do not check", size, i)
			}
		}
	}
}

// TestEncapGSOLimits: a message never exceeds 64 segments or a UDP
// datagram's payload, the smallest MSS still fits, and splitGSO (the
// fallback when the kernel refuses GSO) sends the same datagrams one per
// message.
func TestEncapGSOLimits(t *testing.T) {
	w, _ := newTestTx(true)
	size := bigBuf - 40
	tso := tcpPacket("10.244.1.5", "10.244.2.5", 1, 1, tcpACK, payload(0, size))
	h := vnetHdr{gsoType: gsoTCPv4, hdrLen: 40, gsoSize: tcpMinMSS}
	if err := w.encap(w.tbl.Load(), w.load(h, tso)); err != nil {
		t.Fatal(err)
	}
	w.m.finish()
	want := (size + tcpMinMSS - 1) / tcpMinMSS
	total := 0
	var all [][]byte
	for _, m := range messages(w.m) {
		if len(m.dgs) > maxGSOSegments || len(m.dgs)*len(m.dgs[0]) > maxUDPPayload {
			t.Fatalf("message of %d segments of %d bytes", len(m.dgs), len(m.dgs[0]))
		}
		total += len(m.dgs)
		all = append(all, m.dgs...)
	}
	if total != want {
		t.Fatalf("%d datagrams, want %d", total, want)
	}
	w.m.done = 0
	w.m.splitGSO()
	got := messages(w.m)
	if len(got) != want {
		t.Fatalf("after splitGSO %d messages, want %d", len(got), want)
	}
	for i, m := range got {
		if len(m.dgs) != 1 || m.iovs != 2 || m.gso != 0 || string(m.dgs[0]) != string(all[i]) {
			t.Fatalf("after splitGSO, message %d: %+v", i, m)
		}
	}
	// One segment more than the buffers hold is refused, not cut short.
	w, _ = newTestTx(true)
	h.gsoSize = tcpMinMSS - 1
	if err := w.encap(w.tbl.Load(), w.load(h, tso)); err != nil {
		t.Fatal(err)
	}
	if w.m.n != 0 || w.local[dropMalformed] != 1 {
		t.Fatalf("MSS %d: %d messages, counts %v", h.gsoSize, w.m.n, w.local)
	}
}

// newTestRx is an rx worker over a fake device with a received batch set up
// by hand: datagrams from src, each a GRO train of pkts.
func newTestRx(src string, trains ...[][]byte) (*rxWorker, *fakeTUN) {
	dev := &fakeTUN{}
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	w := newRxWorker(&udpSock{}, dev, &tbl, &counters{}, heapAlloc)
	w.uso = true
	w.fill(src, trains...)
	return w, dev
}

// decapTrains has a worker receive trains from 198.18.0.2 (each train one
// datagram batch of the socket) and decapsulate them, failing the test on
// an error; it returns the worker, the device and the datagrams received,
// in order.
func decapTrains(t *testing.T, trains [][][]byte) (*rxWorker, *fakeTUN, [][]byte) {
	t.Helper()
	w, dev := newTestRx("198.18.0.2", trains...)
	if err := w.decap(w.tbl.Load(), len(trains)); err != nil {
		t.Fatal(err)
	}
	var in [][]byte
	for _, train := range trains {
		in = append(in, train...)
	}
	return w, dev, in
}

// fill sets up a received batch, as newTestRx.
func (w *rxWorker) fill(src string, trains ...[][]byte) {
	w.m.prepareRecv(w.rx[:len(trains)])
	for i, train := range trains {
		n := 0
		for _, p := range train {
			n += copy(w.rx[i][n:], p)
		}
		w.m.hdrs[i].Len = uint32(n)
		w.m.names[i].Addr = netip.MustParseAddr(src).As4()
		c := w.m.ctrl[i*ctrlSpace:]
		h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
		h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
		h.SetLen(unix.CmsgLen(4))
		binary.NativeEndian.PutUint32(c[unix.CmsgLen(0):], uint32(len(train[0])))
		w.m.hdrs[i].Hdr.SetControllen(unix.CmsgSpace(4))
	}
}

func TestDecapSplitsAndChecks(t *testing.T) {
	good := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 1000))
	spoofed := ipPacket("10.244.3.5", "10.244.1.5", 17, 64, make([]byte, 1000))
	last := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 10))
	w, dev := newTestRx("198.18.0.2", [][]byte{good, spoofed, good, last})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if len(dev.packets) != 3 || len(dev.packets[2]) != len(last) || string(dev.packets[0]) != string(good) {
		t.Fatalf("%d packets written", len(dev.packets))
	}
	for i, h := range dev.vnets {
		if h != (vnetHdr{}) {
			t.Fatalf("packet %d written with virtio header %+v, want none", i, h)
		}
	}
	if w.local[pass] != 3 || w.local[dropSpoofed] != 1 {
		t.Fatalf("counts %v", w.local)
	}

	w, dev = newTestRx("198.18.0.99", [][]byte{good, good})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if len(dev.packets) != 0 || w.local[dropUnknownPeer] != 2 {
		t.Fatalf("from an unknown address: %d packets, counts %v", len(dev.packets), w.local)
	}
}

// TestDecapBadHeaderChecksum: a received packet whose IPv4 header checksum
// does not verify is dropped and counted, alone or in a GRO train; the
// kernel would drop it too, had it come alone and not through us. Before,
// it was written into the device and counted forwarded, and as the head of
// coalesced segments it was even given a new, valid checksum.
func TestDecapBadHeaderChecksum(t *testing.T) {
	const mss = 1000
	seg := func(i int) []byte {
		return tcpPacket("10.244.2.5", "10.244.1.5", uint16(10+i), uint32(1000+i*mss), tcpACK, payload(i*mss, mss))
	}
	bad := func(p []byte) []byte { p[10] ^= 0x55; return p }
	lone := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 100))
	for _, tc := range []struct {
		name  string
		train [][]byte
		want  []int // segments per packet written, in order
	}{
		{"alone", [][]byte{bad(append([]byte(nil), lone...))}, nil},
		{"the head of a train", [][]byte{bad(seg(0)), seg(1), seg(2)}, []int{2}},
		{"in the middle", [][]byte{seg(0), bad(seg(1)), seg(2), seg(3)}, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestRx("198.18.0.2", tc.train)
			if err := w.decap(w.tbl.Load(), 1); err != nil {
				t.Fatal(err)
			}
			if w.local[dropBadChecksum] != 1 || w.local[pass] != uint64(len(tc.train)-1) {
				t.Fatalf("counts %v: want one %v, the rest forwarded", w.local, dropBadChecksum)
			}
			if len(dev.packets) != len(tc.want) {
				t.Fatalf("%d packets written, want %d", len(dev.packets), len(tc.want))
			}
			for i, p := range dev.packets {
				n := 1
				if tso, ok := parseGSO(p, dev.vnets[i]); ok {
					n = tso.segments
				}
				if n != tc.want[i] || checksum(p[:20]) != 0 {
					t.Fatalf("packet %d: %d segments, header checksum %#x; want %d segments and a valid checksum", i, n, checksum(p[:20]), tc.want[i])
				}
			}
		})
	}
}

// TestNodeAddressSourceDelivered: a pod on host B (10.244.2.0/24) reaches
// host A's node address 198.18.0.1 over the underlay, unmasqueraded; A's
// reply, from 198.18.0.1 to the pod, follows the network's route into
// flannel0. A's datapath sends it to B (counted forwarded), and B's must
// deliver it, as vxlan, host-gw and flanneld's udp backend do: the inner
// source is the outer one, the address B knows A by. Before, B dropped it
// as spoofedSource.
func TestNodeAddressSourceDelivered(t *testing.T) {
	a, _ := newTestTx(true) // own 10.244.1.0/24
	reply := tcpPacket("198.18.0.1", "10.244.2.5", 7, 1, tcpACK, payload(0, 100))
	if err := a.encap(a.tbl.Load(), a.load(vnetHdr{}, reply)); err != nil {
		t.Fatal(err)
	}
	a.m.finish()
	sent := messages(a.m)
	if a.local[pass] != 1 || len(sent) != 1 || sent[0].dst != netip.MustParseAddrPort("198.18.0.2:8285") {
		t.Fatalf("host A: counts %v, messages %+v; want it sent to 198.18.0.2", a.local, sent)
	}

	// Host B: own 10.244.2.0/24; A holds 10.244.1.0/24 at 198.18.0.1.
	b, dev := newTestRx("198.18.0.1", sent[0].dgs)
	b.tbl.Store(newTable(netip.MustParsePrefix("10.244.2.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.1.0/24"), Dst: netip.MustParseAddrPort("198.18.0.1:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	}))
	if err := b.decap(b.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if len(dev.packets) != 1 || string(dev.packets[0]) != string(sent[0].dgs[0]) || b.local[pass] != 1 {
		t.Fatalf("host B: %d packets written, counts %v (%v = %d); want the reply delivered",
			len(dev.packets), b.local, dropSpoofed, b.local[dropSpoofed])
	}

	// Any other address outside A's subnet is still a spoofed source,
	// another host's public IP included.
	for _, src := range []string{"198.18.0.3", "198.18.0.2", "10.244.3.5", "192.0.2.1"} {
		b.fill("198.18.0.1", [][]byte{tcpPacket(src, "10.244.2.5", 7, 1, tcpACK, payload(0, 100))})
		b.local = [numVerdicts]uint64{}
		if err := b.decap(b.tbl.Load(), 1); err != nil {
			t.Fatal(err)
		}
		if b.local[dropSpoofed] != 1 {
			t.Errorf("host B, inner source %s from 198.18.0.1: counts %v, want one %v", src, b.local, dropSpoofed)
		}
	}
}

// TestDecapCoalesces: consecutive segments of one TCP flow are written as
// one TSO packet, which the kernel's segmentation (done here by the
// sender's own code) turns back into exactly the segments received; what
// does not continue the flow starts a new packet.
func TestDecapCoalesces(t *testing.T) {
	const mss = 1000
	seg := func(i int, flags uint8, n int) []byte {
		return tcpPacket("10.244.2.5", "10.244.1.5", uint16(10+i), uint32(1000+i*mss), flags, payload(i*mss, n))
	}
	other := tcpPacket("10.244.2.6", "10.244.1.5", 1, 1, tcpACK, payload(0, mss))
	for _, tc := range []struct {
		name   string
		trains [][][]byte
		want   []int // segments per packet written, in order
	}{
		{"one train", [][][]byte{{seg(0, tcpACK, mss), seg(1, tcpACK, mss), seg(2, tcpACK, mss), seg(3, tcpACK|tcpPSH, 300)}}, []int{4}},
		{"across trains", [][][]byte{{seg(0, tcpACK, mss), seg(1, tcpACK, mss)}, {seg(2, tcpACK, mss)}}, []int{3}},
		{"PSH ends the packet", [][][]byte{{seg(0, tcpACK, mss), seg(1, tcpACK|tcpPSH, mss), seg(2, tcpACK, mss), seg(3, tcpACK, mss)}}, []int{2, 2}},
		{"a shorter segment ends it", [][][]byte{{seg(0, tcpACK, mss), seg(1, tcpACK, 500)}, {seg(2, tcpACK, mss)}}, []int{2, 1}},
		{"a gap", [][][]byte{{seg(0, tcpACK, mss), seg(2, tcpACK, mss), seg(3, tcpACK, mss)}}, []int{1, 2}},
		{"another flow between", [][][]byte{{seg(0, tcpACK, mss), other, seg(1, tcpACK, mss)}}, []int{1, 1, 1}},
		{"a longer segment", [][][]byte{{seg(0, tcpACK, 500)}, {tcpPacket("10.244.2.5", "10.244.1.5", 11, 1500, tcpACK, payload(500, mss))}}, []int{1, 1}},
		{"SYN and FIN alone", [][][]byte{{seg(0, tcpSYN|tcpACK, mss), seg(1, tcpACK, mss), seg(2, tcpACK|tcpFIN, mss)}}, []int{1, 1, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, dev, in := decapTrains(t, tc.trains)
			if len(dev.packets) != len(tc.want) {
				t.Fatalf("%d packets written, want %d", len(dev.packets), len(tc.want))
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
				if h.gsoType != gsoTCPv4 || h.flags != vnetNeedsCsum || h.hdrLen != 40 || h.csumStart != 20 || h.csumOffset != 16 {
					t.Fatalf("packet %d: virtio header %+v", i, h)
				}
				if int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt) || checksum(pkt[:20]) != 0 {
					t.Fatalf("packet %d: total length %d of %d, or header checksum wrong", i, binary.BigEndian.Uint16(pkt[2:]), len(pkt))
				}
				tso, ok := parseGSO(pkt, h)
				if !ok || tso.segments != tc.want[i] {
					t.Fatalf("packet %d: %+v, %v; want %d segments", i, tso, ok, tc.want[i])
				}
				for j := range tso.segments {
					hdr := make([]byte, tso.hdrLen)
					got := append(hdr, tso.segment(pkt, j, hdr)...)
					if string(got) != string(in[k]) {
						t.Fatalf("packet %d, segment %d:\n got %x\nwant %x", i, j, got[:40], in[k][:40])
					}
					k++
				}
			}
		})
	}
}

// BenchmarkForwardingPath measures the datapath's own work per packet, with
// no system call: encap cuts a 64 KiB TSO packet read from the device into
// 1400-byte segments (lookup, TTL, headers, checksums, GSO messages),
// encap-udp a USO packet (a UDP_SEGMENT send) as large into datagrams, and
// decap (decap-udp) checks a received GRO train of TCP segments (UDP
// datagrams) and coalesces it into one packet for the device. All must
// allocate nothing.
func BenchmarkForwardingPath(b *testing.B) {
	const mss = 1400
	const n = 46 // one 64 KiB TSO packet's worth of segments
	b.Run("encap", func(b *testing.B) {
		w, _ := newTestTx(true)
		tso := tcpPacket("10.244.1.5", "10.244.2.5", 1, 1, tcpACK, payload(0, n*mss))
		h := vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: 40, gsoSize: mss, csumStart: 20, csumOffset: 16}
		buf := w.load(h, tso)
		t := w.tbl.Load()
		b.ReportAllocs()
		b.SetBytes(int64(len(tso)))
		for b.Loop() {
			buf[vnetHdrLen+8] = 64 // undo the previous round's TTL step
			if err := w.encap(t, buf); err != nil {
				b.Fatal(err)
			}
			w.m.finish()
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pkts/s")
	})
	b.Run("encap-udp", func(b *testing.B) {
		// A UDP_SEGMENT send of n datagrams of mss bytes, as USO hands
		// it over.
		w, _ := newTestTx(true)
		uso := usoPacket("10.244.1.5", "10.244.2.5", 1, false, payload(0, n*mss))
		buf := w.load(usoHdr(mss), uso)
		t := w.tbl.Load()
		b.ReportAllocs()
		b.SetBytes(int64(len(uso)))
		for b.Loop() {
			buf[vnetHdrLen+8] = 64
			if err := w.encap(t, buf); err != nil {
				b.Fatal(err)
			}
			w.m.finish()
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pkts/s")
	})
	b.Run("decap", func(b *testing.B) {
		var train [][]byte
		for i := range n {
			train = append(train, tcpPacket("10.244.2.5", "10.244.1.5", 1, uint32(1+i*mss), tcpACK, payload(i*mss, mss)))
		}
		benchDecap(b, train, false)
	})
	b.Run("decap-udp", func(b *testing.B) {
		var train [][]byte
		for i := range n {
			train = append(train, udpDatagram("10.244.2.5", "10.244.1.5", uint16(i), payload(i*mss, mss)))
		}
		benchDecap(b, train, true)
	})
}

// tcpSYN is the SYN flag, which the datapath never looks at.
const tcpSYN = 0x02

// discard is a tunWriter that counts writes.
type discard struct{ writes int }

func (d *discard) write([][]byte) error { d.writes++; return nil }

// FuzzGROSegment feeds arbitrary control data (what recvmmsg fills in) to
// groSegment: it must not read past the buffer, and where x/sys/unix reads
// the whole of it as control messages, it must give the payload of the first
// UDP_GRO message of 4 bytes or more, 0 if there is none.
func FuzzGROSegment(f *testing.F) {
	good := make([]byte, ctrlSpace)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&good[0]))
	h.Level, h.Type = unix.SOL_UDP, unix.UDP_GRO
	h.SetLen(unix.CmsgLen(4))
	binary.NativeEndian.PutUint32(good[unix.CmsgLen(0):], 1400)
	f.Add(good[:unix.CmsgSpace(4)])
	f.Add([]byte{})
	f.Add(make([]byte, unix.SizeofCmsghdr))
	f.Fuzz(func(t *testing.T, b []byte) {
		// The kernel writes into our 8-byte aligned buffer; so does this.
		buf := make([]uint64, (len(b)+7)/8+1)
		aligned := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), len(b))
		copy(aligned, b)
		seg := groSegment(aligned)
		if string(b) == string(good[:unix.CmsgSpace(4)]) && seg != 1400 {
			t.Fatalf("segment %d, want 1400", seg)
		}
		msgs, err := unix.ParseSocketControlMessage(b)
		if err != nil {
			return
		}
		want := 0
		for _, m := range msgs {
			if m.Header.Level == unix.SOL_UDP && m.Header.Type == unix.UDP_GRO && len(m.Data) >= 4 {
				want = int(binary.NativeEndian.Uint32(m.Data))
				break
			}
		}
		if seg != want {
			t.Fatalf("groSegment(%x) = %d; the control messages %+v give %d", b, seg, msgs, want)
		}
	})
}

// FuzzParseSpec feeds arbitrary keeper answers to parseSpec: what it accepts
// is in range and is what the keeper would have said for it; the answer of a
// keeper holding two of each is read as two of each.
func FuzzParseSpec(f *testing.F) {
	f.Add("tun=2,udp=2")
	f.Add("tun=0,udp=1")
	f.Add("tun=,udp")
	f.Add("udp=64,tun=1")
	f.Fuzz(func(t *testing.T, s string) {
		nt, nu, err := parseSpec(s)
		if s == "tun=2,udp=2" && (nt != 2 || nu != 2 || err != nil) {
			t.Fatalf("parseSpec(%q) = %d, %d, %v; want 2, 2, nil", s, nt, nu, err)
		}
		if err != nil {
			return
		}
		if nt < 1 || nu < 1 || nt > 64 || nu > 64 {
			t.Fatalf("accepted %q as tun=%d udp=%d", s, nt, nu)
		}
		checkSpecRoundTrip(t, nt, nu)
	})
}

// TestParseSpec: every answer a keeper gives, for 1–64 descriptors of each
// kind, reads back as those counts; answers outside that are refused.
func TestParseSpec(t *testing.T) {
	for a := 1; a <= 64; a++ {
		for b := 1; b <= 64; b++ {
			checkSpecRoundTrip(t, a, b)
		}
	}
	for _, s := range []string{"", "tun=0,udp=1", "tun=1,udp=0", "tun=65,udp=1", "tun=1,udp=65", "tun=-1,udp=1",
		"tun=1", "udp=1", "tun=1,udp=1,x=1", "tun=1,udp=x", "tun=1;udp=1"} {
		if nt, nu, err := parseSpec(s); err == nil {
			t.Errorf("parseSpec(%q) = %d, %d, nil; want an error", s, nt, nu)
		}
	}
}

func checkSpecRoundTrip(t *testing.T, ntun, nudp int) {
	t.Helper()
	s := (&kept{tun: make([]int, ntun), udp: make([]int, nudp)}).spec()
	if nt, nu, err := parseSpec(s); nt != ntun || nu != nudp || err != nil {
		t.Fatalf("parseSpec(%q) = %d, %d, %v; want %d, %d, nil", s, nt, nu, err, ntun, nudp)
	}
}

func TestMetrics(t *testing.T) {
	b := testBackend(t)
	b.stats.rx[dropSpoofed].Add(3)
	b.stats.tx[pass].Add(5)
	b.stats.icmpLimited.Add(2)
	b.stats.rx[dropBadChecksum].Add(4)
	reg := prometheus.NewRegistry()
	if err := reg.Register(b); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, l := range m.GetLabel() {
				key += "," + l.GetName() + "=" + l.GetValue()
			}
			got[key] = m.GetCounter().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"agentd_udp_packets_total,direction=in,result=spoofedSource": 3,
		"agentd_udp_packets_total,direction=out,result=forwarded":    5,
		"agentd_udp_packets_total,direction=in,result=unknownPeer":   0,
		"agentd_udp_packets_total,direction=in,result=badChecksum":   4,
		"agentd_udp_send_errors_total":                               0,
		"agentd_udp_icmp_rate_limited_total":                         2,
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
}

// heapAlloc gives test workers their buffers from the Go heap.
func heapAlloc(n int) []byte { return make([]byte, n) }

// TestArenaFitsWorkers: the arena sizes (txBytes, rxBytes) are exactly
// what the workers take, so a datapath never runs out of buffer memory
// (alloc panics) nor maps more than it uses; buffers do not overlap.
func TestArenaFitsWorkers(t *testing.T) {
	a, err := newArena(txBytes() + rxBytes())
	if err != nil {
		t.Fatal(err)
	}
	defer a.release()
	var tbl atomic.Pointer[table]
	tx := newTxWorker(nil, &fakeTUN{}, &udpSock{}, &tbl, &counters{}, a.alloc)
	rx := newRxWorker(&udpSock{}, &fakeTUN{}, &tbl, &counters{}, a.alloc)
	if a.off != len(a.mem) {
		t.Errorf("workers took %d of %d arena bytes", a.off, len(a.mem))
	}
	bufs := append([][]byte{tx.buf, tx.hdrs, tx.icmp}, rx.rx...)
	for _, b := range bufs {
		if cap(b) != len(b) {
			t.Fatalf("buffer of %d bytes has capacity %d: it could grow into its neighbour", len(b), cap(b))
		}
		for i := range b {
			b[i] = 0xa5 // every byte is mapped and writable
		}
	}
}

// TestICMPErrorBudgetShared: the tx workers of a backend (which share its
// counters) share one ICMP error budget, as the kernel's icmp_msgs_per_sec
// is one for the host: together they send at most icmpBurst errors and then
// one per icmpInterval, however many they are. Before, each worker had a
// bucket of its own, and n workers sent n times as many.
func TestICMPErrorBudgetShared(t *testing.T) {
	pkt := ipPacket("10.244.1.5", "10.244.99.7", 17, 64, make([]byte, 8))
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())

	t.Run("one clock", func(t *testing.T) {
		c := &counters{}
		now := time.Unix(1000, 0)
		dev := &fakeTUN{}
		var ws []*txWorker
		for range 2 {
			w := newTxWorker(nil, dev, &udpSock{}, &tbl, c, heapAlloc)
			w.now = func() time.Time { return now }
			ws = append(ws, w)
		}
		flood := func() {
			for _, w := range ws {
				for range 2 * icmpBurst {
					if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		flood()
		if n, held := len(dev.packets), ws[0].icmpLimited+ws[1].icmpLimited; n != icmpBurst || held != 3*icmpBurst {
			t.Fatalf("two workers wrote %d ICMP errors and held back %d for %d packets at one instant; want %d and %d",
				n, held, 4*icmpBurst, icmpBurst, 3*icmpBurst)
		}
		now = now.Add(10 * icmpInterval)
		flood()
		if n := len(dev.packets); n != icmpBurst+10 {
			t.Fatalf("%d ICMP errors written after 10 intervals more, want %d", n, icmpBurst+10)
		}
	})

	// Workers on goroutines of their own, with the real clock: together
	// never more than the budget earned while they ran.
	t.Run("concurrent", func(t *testing.T) {
		const workers, flood = 4, 500
		c := &counters{}
		devs := make([]*fakeTUN, workers)
		ws := make([]*txWorker, workers)
		for i := range ws {
			devs[i] = &fakeTUN{}
			ws[i] = newTxWorker(nil, devs[i], &udpSock{}, &tbl, c, heapAlloc)
		}
		start := time.Now()
		errs := make(chan error, workers)
		for _, w := range ws {
			go func() {
				for range flood {
					if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range workers {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		elapsed := time.Since(start)
		n, held := 0, uint64(0)
		for i, w := range ws {
			n += len(devs[i].packets)
			held += w.icmpLimited
		}
		most := icmpBurst + int(elapsed/icmpInterval) + 1
		if n < icmpBurst || n > most || uint64(n)+held != workers*flood {
			t.Fatalf("%d workers wrote %d ICMP errors and held back %d for %d packets in %v; want %d to %d written, the rest held back",
				workers, n, held, workers*flood, elapsed, icmpBurst, most)
		}
	})
}

// TestICMPErrorHeldBackUnbuilt: an error the rate limit holds back is not
// built (the worker's ICMP buffer is left alone), and a packet about which
// no error may be sent at all (here: to a broadcast address) neither spends
// the budget nor counts as held back. Before, every error was built (its
// quote copied, its checksums summed) and then held back.
func TestICMPErrorHeldBackUnbuilt(t *testing.T) {
	w, dev := newTestTx(true)
	now := time.Unix(1000, 0)
	w.now = func() time.Time { return now }
	send := func(dst string, n int) {
		t.Helper()
		pkt := ipPacket("10.244.1.5", dst, 17, 64, make([]byte, 100))
		for range n {
			if err := w.encap(w.tbl.Load(), w.load(vnetHdr{}, pkt)); err != nil {
				t.Fatal(err)
			}
		}
	}
	send("10.244.99.255", 3*icmpBurst)
	if len(dev.packets) != 0 || w.icmpLimited != 0 {
		t.Fatalf("%d ICMP errors written, %d held back about packets to a broadcast address; want none", len(dev.packets), w.icmpLimited)
	}
	send("10.244.99.7", icmpBurst)
	if len(dev.packets) != icmpBurst || w.icmpLimited != 0 {
		t.Fatalf("%d ICMP errors written, %d held back; want the whole burst, %d, and none", len(dev.packets), w.icmpLimited, icmpBurst)
	}
	for i := range w.icmp {
		w.icmp[i] = 0xa5
	}
	send("10.244.98.7", 1)
	send("10.244.99.255", 1)
	if len(dev.packets) != icmpBurst || w.icmpLimited != 1 {
		t.Fatalf("%d ICMP errors written, %d held back; want %d and 1", len(dev.packets), w.icmpLimited, icmpBurst)
	}
	for i, b := range w.icmp {
		if b != 0xa5 {
			t.Fatalf("byte %d of the ICMP buffer was written (%#02x) for an error held back", i, b)
		}
	}
}

// BenchmarkICMPFlood measures a tx worker's work per packet for a subnet
// nobody holds once the ICMP error budget is spent (a scan, a routing
// loop): one worker on a clock that stands still, and, "parallel", workers
// on every CPU sharing the backend's budget on the real clock. Neither may
// allocate.
func BenchmarkICMPFlood(b *testing.B) {
	pkt := ipPacket("10.244.1.5", "10.244.99.7", 17, 64, make([]byte, 1400))
	b.Run("one", func(b *testing.B) {
		w, _ := newTestTx(true)
		now := time.Unix(1000, 0)
		w.now = func() time.Time { return now }
		buf := w.load(vnetHdr{}, pkt)
		t := w.tbl.Load()
		b.ReportAllocs()
		for b.Loop() {
			if err := w.encap(t, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		c := &counters{}
		var tbl atomic.Pointer[table]
		tbl.Store(testTable())
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			w := newTxWorker(nil, &discard{}, &udpSock{}, &tbl, c, heapAlloc)
			buf := w.load(vnetHdr{}, pkt)
			t := tbl.Load()
			for pb.Next() {
				if err := w.encap(t, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	})
}

// benchDecap receives train from 198.18.0.2 and decapsulates it once per
// round, each into one coalesced write (TSO, or USO with uso), and reports
// the packets per second.
func benchDecap(b *testing.B, train [][]byte, uso bool) {
	b.Helper()
	dev := &discard{}
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	w := newRxWorker(&udpSock{}, dev, &tbl, &counters{}, heapAlloc)
	w.uso = uso
	t := tbl.Load()
	b.ReportAllocs()
	b.SetBytes(int64(len(train) * len(train[0])))
	for b.Loop() {
		// The head is rewritten in place: receive the train anew.
		w.fill("198.18.0.2", train)
		if err := w.decap(t, 1); err != nil {
			b.Fatal(err)
		}
	}
	if dev.writes != b.N {
		b.Fatalf("%d writes in %d rounds, want one each", dev.writes, b.N)
	}
	b.ReportMetric(float64(b.N*len(train))/b.Elapsed().Seconds(), "pkts/s")
}
