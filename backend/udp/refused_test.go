package udp

// Packets the kernel refuses: counted forwarded only once the kernel took
// them, and refused, one per packet, when it did not.

import (
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// refusingTUN is a tunWriter that refuses its first n writes with err (as
// a device that is down refuses them with EIO) and keeps the packets of
// the others, one entry per write.
type refusingTUN struct {
	n       int
	err     error
	writes  int
	packets [][]byte
}

func (f *refusingTUN) write(parts [][]byte) error {
	f.writes++
	if f.writes <= f.n {
		return f.err
	}
	var b []byte
	for _, p := range parts[1:] {
		b = append(b, p...)
	}
	f.packets = append(f.packets, b)
	return nil
}

// TestDecapCountsRefusedWrites: a write into the device that the kernel
// refuses counts every packet in it (four coalesced TCP segments) as
// refused, not forwarded, and one write error; the next write, accepted,
// counts its packet forwarded. Before, the four were counted forwarded as
// they passed the checks.
func TestDecapCountsRefusedWrites(t *testing.T) {
	const mss = 1000
	var train [][]byte
	for i := range 4 {
		train = append(train, tcpPacket("10.244.2.5", "10.244.1.5", uint16(i), uint32(1+i*mss), tcpACK, payload(i*mss, mss)))
	}
	single := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 100))
	spoofed := ipPacket("10.244.3.5", "10.244.1.5", 17, 64, make([]byte, 100))
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"device down", unix.EIO},
		{"device deleted", unix.EBADFD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &refusingTUN{n: 1, err: tc.err}
			var tbl atomic.Pointer[table]
			tbl.Store(testTable())
			c := &counters{}
			w := newRxWorker(&udpSock{}, dev, &tbl, c, heapAlloc)
			w.fill("198.18.0.2", train, [][]byte{single}, [][]byte{spoofed})
			if err := w.decap(w.tbl.Load(), 3); err != nil {
				t.Fatal(err)
			}
			flush(&c.rx, &w.local) // as run does
			if dev.writes != 2 || len(dev.packets) != 1 || string(dev.packets[0]) != string(single) {
				t.Fatalf("%d writes, %d accepted; want the coalesced packet refused, then the single one written", dev.writes, len(dev.packets))
			}
			s := c.snapshot()
			if s.Received != 1 || s.Dropped["refused"] != 4 || s.Dropped["spoofedSource"] != 1 || s.TUNWriteErrors != 1 {
				t.Fatalf("stats %+v; want received 1, dropped refused 4 and spoofedSource 1, 1 TUN write error", s)
			}
		})
	}
}

// queueOf is a tunReader that hands out its packets, each with a virtio
// header, then fails as a closed queue does.
type queueOf struct {
	pkts [][]byte
}

var errQueueClosed = errors.New("queue closed")

func (q *queueOf) read(b []byte) (int, error) {
	if len(q.pkts) == 0 {
		return 0, errQueueClosed
	}
	p := q.pkts[0]
	q.pkts = q.pkts[1:]
	return copy(b, p), nil
}

// TestEncapCountsRefusedSends: datagrams that sendmmsg refuses (here
// ENETUNREACH: the peer's address has no route) are counted refused and as
// send errors, not forwarded; a datagram the kernel sends is forwarded.
// Before, every datagram that passed the checks was counted forwarded, so
// the refused ones were counted twice, as forwarded and as send errors.
func TestEncapCountsRefusedSends(t *testing.T) {
	sock, peer := sockPair(t, 1500)
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		// No route to it in the test's namespace.
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.19.0.9:8285")},
	})
	var ptbl atomic.Pointer[table]
	ptbl.Store(tbl)
	const mss = 1000
	tso := tcpPacket("10.244.1.5", "10.244.3.5", 1, 1, tcpACK, payload(0, 3*mss))
	vnet := func(h vnetHdr, pkt []byte) []byte {
		b := make([]byte, vnetHdrLen+len(pkt))
		h.encode(b)
		copy(b[vnetHdrLen:], pkt)
		return b
	}
	in := &queueOf{pkts: [][]byte{
		vnet(vnetHdr{flags: vnetNeedsCsum, gsoType: gsoTCPv4, hdrLen: 40, gsoSize: mss, csumStart: 20, csumOffset: 16}, tso),
		vnet(vnetHdr{}, ipPacket("10.244.1.5", "10.244.2.5", 17, 64, make([]byte, 100))),
	}}
	c := &counters{}
	w := newTxWorker(in, &fakeTUN{}, sock, &ptbl, c, heapAlloc)
	if err := w.run(); !errors.Is(err, errQueueClosed) {
		t.Fatalf("run: %v", err)
	}
	buf := make([]byte, 2000)
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, _, err := peer.ReadFromUDPAddrPort(buf); err != nil || n != 100+20 {
		t.Fatalf("the reachable peer got %d bytes, %v", n, err)
	}
	s := c.snapshot()
	if s.Sent != 1 || s.Dropped["refused"] != 3 || s.SendErrors != 3 {
		t.Fatalf("stats %+v; want sent 1, dropped refused 3, 3 send errors", s)
	}
}

// TestMetricsRefused: the refused packets of each direction are a result
// of agentd_udp_packets_total of their own, present from the start.
func TestMetricsRefused(t *testing.T) {
	b := testBackend(t)
	reg := prometheus.NewRegistry()
	if err := reg.Register(b); err != nil {
		t.Fatal(err)
	}
	got := func() map[string]float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]float64{}
		for _, mf := range mfs {
			if mf.GetName() != "agentd_udp_packets_total" {
				continue
			}
			for _, s := range mf.GetMetric() {
				key := ""
				for _, l := range s.GetLabel() {
					key += l.GetName() + "=" + l.GetValue() + ","
				}
				m[key] = s.GetCounter().GetValue()
			}
		}
		return m
	}
	const out, in, fwdIn = "direction=out,result=refused,", "direction=in,result=refused,", "direction=in,result=forwarded,"
	m := got()
	for _, k := range []string{out, in} {
		if v, ok := m[k]; !ok || v != 0 {
			t.Errorf("%s = %v (present %v), want 0 from the start", k, v, ok)
		}
	}
	// A worker counting into the backend's counters has a write of two
	// packets refused.
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	w := newRxWorker(&udpSock{}, &refusingTUN{n: 1, err: unix.EIO}, &tbl, &b.stats, heapAlloc)
	const mss = 1000
	w.fill("198.18.0.2", [][]byte{
		tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK, payload(0, mss)),
		tcpPacket("10.244.2.5", "10.244.1.5", 2, 1+mss, tcpACK, payload(mss, mss)),
	})
	if err := w.decap(w.tbl.Load(), 1); err != nil {
		t.Fatal(err)
	}
	flush(&b.stats.rx, &w.local)
	m = got()
	if m[in] != 2 || m[fwdIn] != 0 || m[out] != 0 {
		t.Errorf("in refused %v, in forwarded %v, out refused %v; want 2, 0, 0", m[in], m[fwdIn], m[out])
	}
}

// TestDecapCountsCutOffBatch: the device's queue is closed under the rx
// worker (the agent stops) while it writes a packet of a received batch.
// That packet, and every other packet of the batch that passes the checks,
// is counted refused; those that do not, by their reason. Before, only the
// packets of the failed write were counted: the one that had ended the
// coalesced packet (another flow) and the rest of the batch were counted
// nowhere.
func TestDecapCountsCutOffBatch(t *testing.T) {
	const mss = 1000
	flowA := tcpPacket("10.244.2.5", "10.244.1.5", 1, 1, tcpACK, payload(0, mss))
	flowB := tcpPacket("10.244.2.6", "10.244.1.5", 2, 1, tcpACK, payload(0, mss))
	single := ipPacket("10.244.2.5", "10.244.1.5", 17, 64, make([]byte, 100))
	spoofed := ipPacket("10.244.3.5", "10.244.1.5", 17, 64, make([]byte, 100))
	dev := &refusingTUN{n: 100, err: errQueueClosed}
	var tbl atomic.Pointer[table]
	tbl.Store(testTable())
	c := &counters{}
	w := newRxWorker(&udpSock{}, dev, &tbl, c, heapAlloc)
	w.fill("198.18.0.2", [][]byte{flowA}, [][]byte{flowB}, [][]byte{single}, [][]byte{spoofed})
	if err := w.decap(w.tbl.Load(), 4); !errors.Is(err, errQueueClosed) {
		t.Fatalf("decap: %v, want the closed queue's error", err)
	}
	flush(&c.rx, &w.local) // as run does
	s := c.snapshot()
	if s.Received != 0 || s.Dropped["refused"] != 3 || s.Dropped["spoofedSource"] != 1 || len(s.Dropped) != 2 {
		t.Fatalf("stats %+v; want dropped refused 3 and spoofedSource 1, nothing else", s)
	}
	if dev.writes != 1 {
		t.Errorf("%d writes into a closed queue, want 1", dev.writes)
	}
}
