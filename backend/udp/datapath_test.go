package udp

import (
	"encoding/binary"
	"net/netip"
	"os"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/tun"
)

// fakeTUN is a tun.Device that counts what is written into it and keeps the
// last write's packets.
type fakeTUN struct {
	writes  int
	packets [][]byte
}

var _ tun.Device = (*fakeTUN)(nil)

func (f *fakeTUN) File() *os.File                         { return nil }
func (f *fakeTUN) Read([][]byte, []int, int) (int, error) { return 0, os.ErrClosed }
func (f *fakeTUN) Write(bufs [][]byte, offset int) (int, error) {
	f.writes++
	f.packets = f.packets[:0]
	for _, b := range bufs {
		f.packets = append(f.packets, b[offset:])
	}
	return len(bufs), nil
}
func (f *fakeTUN) MTU() (int, error)        { return 1472, nil }
func (f *fakeTUN) Name() (string, error)    { return "fake", nil }
func (f *fakeTUN) Events() <-chan tun.Event { return nil }
func (f *fakeTUN) Close() error             { return nil }
func (f *fakeTUN) BatchSize() int           { return readBatch }

func testTable() *table {
	return newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
	})
}

// newTestTx is a tx worker over a fake device and a socket that is never
// used for I/O.
func newTestTx(gso bool) (*txWorker, *fakeTUN) {
	dev := &fakeTUN{}
	s := &udpSock{}
	s.gso.Store(gso)
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	return newTxWorker(dev, s, &tbl, &counters{}, 1472, heapAlloc), dev
}

// load puts pkts into the worker's buffers as a TUN read would.
func (w *txWorker) load(pkts ...[]byte) int {
	for i, p := range pkts {
		copy(w.bufs[i][headroom:], p)
		w.sizes[i] = len(p)
	}
	return len(pkts)
}

// messages describes the batch built in m: per message, the destination
// and the datagram lengths; and the GSO segment size when there is one.
type message struct {
	dst  netip.AddrPort
	lens []int
	gso  int
}

func messages(m *mmsg) []message {
	var out []message
	for i := range m.n {
		h := &m.hdrs[i].Hdr
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(h.Name))
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		msg := message{dst: netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port)}
		iovs := unsafe.Slice(h.Iov, h.Iovlen)
		for _, v := range iovs {
			msg.lens = append(msg.lens, int(v.Len))
		}
		if h.Controllen > 0 {
			c := unsafe.Slice(h.Control, h.Controllen)
			msg.gso = int(binary.NativeEndian.Uint16(c[unix.CmsgLen(0):]))
		}
		out = append(out, msg)
	}
	return out
}

func TestEncapBatches(t *testing.T) {
	to2 := func(n int) []byte { return ipPacket("10.244.1.5", "10.244.2.5", 6, 64, make([]byte, n)) }
	to3 := func(n int) []byte { return ipPacket("10.244.1.5", "10.244.3.5", 6, 64, make([]byte, n)) }
	p2 := netip.MustParseAddrPort("198.18.0.2:8285")
	p3 := netip.MustParseAddrPort("198.18.0.3:8285")
	for _, tc := range []struct {
		name string
		gso  bool
		pkts [][]byte
		want []message
	}{
		{"one packet", true, [][]byte{to2(100)}, []message{{p2, []int{120}, 0}}},
		{"a train to one peer", true, [][]byte{to2(1000), to2(1000), to2(1000), to2(500)},
			[]message{{p2, []int{1020, 1020, 1020, 520}, 1020}}},
		{"a shorter packet ends the message", true, [][]byte{to2(1000), to2(500), to2(1000)},
			[]message{{p2, []int{1020, 520}, 1020}, {p2, []int{1020}, 0}}},
		{"a longer packet starts a new one", true, [][]byte{to2(500), to2(1000)},
			[]message{{p2, []int{520}, 0}, {p2, []int{1020}, 0}}},
		{"peers alternate", true, [][]byte{to2(100), to3(100), to2(100)},
			[]message{{p2, []int{120}, 0}, {p3, []int{120}, 0}, {p2, []int{120}, 0}}},
		{"without GSO", false, [][]byte{to2(100), to2(100)},
			[]message{{p2, []int{120}, 0}, {p2, []int{120}, 0}}},
		{"unknown subnet and TTL 1 are not sent", true, [][]byte{
			ipPacket("10.244.1.5", "10.244.77.5", 17, 64, make([]byte, 8)), to2(100),
			ipPacket("10.244.1.5", "10.244.2.5", 17, 1, make([]byte, 8))},
			[]message{{p2, []int{120}, 0}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestTx(tc.gso)
			w.encap(w.tbl.Load(), w.load(tc.pkts...))
			w.m.finish()
			got := messages(w.m)
			if len(got) != len(tc.want) {
				t.Fatalf("messages %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i].dst != tc.want[i].dst || len(got[i].lens) != len(tc.want[i].lens) || got[i].gso != tc.want[i].gso {
					t.Fatalf("message %d: %+v, want %+v", i, got[i], tc.want[i])
				}
				for j := range got[i].lens {
					if got[i].lens[j] != tc.want[i].lens[j] {
						t.Fatalf("message %d: %+v, want %+v", i, got[i], tc.want[i])
					}
				}
			}
			if tc.name == "unknown subnet and TTL 1 are not sent" {
				if dev.writes != 2 {
					t.Fatalf("%d ICMP errors written back, want 2", dev.writes)
				}
			}
		})
	}
}

// TestEncapGSOLimits: a message never exceeds 64 segments or a UDP
// datagram's payload, and splitGSO (the fallback when the kernel refuses
// GSO) sends the same datagrams one per message.
func TestEncapGSOLimits(t *testing.T) {
	w, _ := newTestTx(true)
	var pkts [][]byte
	for range 100 {
		pkts = append(pkts, ipPacket("10.244.1.5", "10.244.2.5", 6, 64, make([]byte, 1200)))
	}
	w.encap(w.tbl.Load(), w.load(pkts...))
	w.m.finish()
	total := 0
	for _, m := range messages(w.m) {
		if len(m.lens) > maxGSOSegments || len(m.lens)*m.lens[0] > maxUDPPayload {
			t.Fatalf("message of %d segments of %d bytes", len(m.lens), m.lens[0])
		}
		total += len(m.lens)
	}
	if total != 100 {
		t.Fatalf("%d datagrams, want 100", total)
	}
	w.m.done = 0
	w.m.splitGSO()
	got := messages(w.m)
	if len(got) != 100 {
		t.Fatalf("after splitGSO %d messages, want 100", len(got))
	}
	for _, m := range got {
		if len(m.lens) != 1 || m.gso != 0 || m.lens[0] != 1220 {
			t.Fatalf("after splitGSO: %+v", m)
		}
	}
}

// newTestRx is an rx worker over a fake device with a received batch set up
// by hand: datagrams from src, each a GRO train of pkts.
func newTestRx(src string, trains ...[][]byte) (*rxWorker, *fakeTUN) {
	dev := &fakeTUN{}
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	w := newRxWorker(&udpSock{}, dev, &tbl, &counters{}, heapAlloc)
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
	return w, dev
}

func TestDecapSplitsAndChecks(t *testing.T) {
	good := ipPacket("10.244.2.5", "10.244.1.5", 6, 64, make([]byte, 1000))
	spoofed := ipPacket("10.244.3.5", "10.244.1.5", 6, 64, make([]byte, 1000))
	last := ipPacket("10.244.2.5", "10.244.1.5", 6, 64, make([]byte, 10))
	w, dev := newTestRx("198.18.0.2", [][]byte{good, spoofed, good, last})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if dev.writes != 1 || len(dev.packets) != 3 || len(dev.packets[2]) != len(last) || string(dev.packets[0]) != string(good) {
		t.Fatalf("%d writes, %d packets", dev.writes, len(dev.packets))
	}
	if w.local[pass] != 3 || w.local[dropSpoofed] != 1 {
		t.Fatalf("counts %v", w.local)
	}

	w, dev = newTestRx("198.18.0.99", [][]byte{good, good})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	if dev.writes != 0 || w.local[dropUnknownPeer] != 2 {
		t.Fatalf("from an unknown address: %d writes, counts %v", dev.writes, w.local)
	}
}

// BenchmarkForwardingPath measures the datapath's own work per packet, with
// no system call: encap routes a batch of 1400-byte packets read from the
// device (lookup, TTL, GSO message building) and decap checks and splits a
// received GRO train into packets for the device. Both must allocate nothing.
func BenchmarkForwardingPath(b *testing.B) {
	const n = 44 // one 64 KiB TSO packet's worth of 1400-byte segments
	pkt := ipPacket("10.244.1.5", "10.244.2.5", 6, 64, make([]byte, 1380))
	b.Run("encap", func(b *testing.B) {
		w, _ := newTestTx(true)
		var pkts [][]byte
		for range n {
			pkts = append(pkts, pkt)
		}
		w.load(pkts...)
		t := w.tbl.Load()
		b.ReportAllocs()
		b.SetBytes(int64(n * len(pkt)))
		for b.Loop() {
			for i := range n {
				// Undo the previous round's TTL step.
				p := w.bufs[i][headroom:]
				p[8], p[10], p[11] = pkt[8], pkt[10], pkt[11]
			}
			w.encap(t, n)
			w.m.finish()
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pkts/s")
	})
	b.Run("decap", func(b *testing.B) {
		in := ipPacket("10.244.2.5", "10.244.1.5", 6, 64, make([]byte, 1380))
		var train [][]byte
		for range n {
			train = append(train, in)
		}
		w, _ := newTestRx("198.18.0.2", train)
		t := w.tbl.Load()
		b.ReportAllocs()
		b.SetBytes(int64(n * len(in)))
		for b.Loop() {
			if err := w.decap(t, 1); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "pkts/s")
	})
}

// FuzzGROSegment feeds arbitrary control data (what recvmmsg fills in) to
// groSegment: it must not read past the buffer, and must find the segment
// size of a well-formed UDP_GRO message.
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
	})
}

// FuzzParseSpec feeds arbitrary keeper answers to parseSpec.
func FuzzParseSpec(f *testing.F) {
	f.Add("tun=2,udp=2")
	f.Add("tun=0,udp=1")
	f.Add("tun=,udp")
	f.Fuzz(func(t *testing.T, s string) {
		nt, nu, err := parseSpec(s)
		if err == nil && (nt < 1 || nu < 1 || nt > 64 || nu > 64) {
			t.Fatalf("accepted %q as tun=%d udp=%d", s, nt, nu)
		}
	})
}

func TestMetrics(t *testing.T) {
	b := testBackend(t)
	b.stats.rx[dropSpoofed].Add(3)
	b.stats.tx[pass].Add(5)
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
		"agentd_udp_send_errors_total":                               0,
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
	for _, mtu := range []int{576, 1472, 8972} {
		a, err := newArena(txBytes(mtu) + rxBytes())
		if err != nil {
			t.Fatal(err)
		}
		var tbl atomic.Pointer[table]
		tx := newTxWorker(&fakeTUN{}, &udpSock{}, &tbl, &counters{}, mtu, a.alloc)
		rx := newRxWorker(&udpSock{}, &fakeTUN{}, &tbl, &counters{}, a.alloc)
		if a.off != len(a.mem) {
			t.Errorf("MTU %d: workers took %d of %d arena bytes", mtu, a.off, len(a.mem))
		}
		bufs := append(append(append(append([][]byte{}, tx.bufs...), tx.icmp...), rx.rx...), rx.out...)
		for _, b := range bufs {
			if cap(b) != len(b) {
				t.Fatalf("MTU %d: buffer of %d bytes has capacity %d: it could grow into its neighbour", mtu, len(b), cap(b))
			}
			for i := range b {
				b[i] = 0xa5 // every byte is mapped and writable
			}
		}
		a.release()
	}
}
