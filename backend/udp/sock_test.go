package udp

// Root tests of the UDP side alone: a datapath socket in one namespace
// sending to plain sockets in another, over a veth whose MTU is smaller
// than the datagrams:
//
//	 ns host                                ns peer
//	┌─────────────────────────────┐        ┌──────────────────────────┐
//	│ udpSock at 198.18.0.1       │        │ UDP socket on :8285 at   │
//	│ ext0 198.18.0.1/24 mtu 1400 ── veth ── peer0 198.18.0.2/24      │
//	└─────────────────────────────┘        └──────────────────────────┘

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
)

// sockPair makes the namespaces above, with ext0's MTU mtu, and returns a
// datapath socket in "host" and a plain socket in "peer" at 198.18.0.2:8285.
func sockPair(t *testing.T, mtu int) (*udpSock, *net.UDPConn) {
	t.Helper()
	host, peerNS := nstest.New(t), nstest.New(t)
	ext := host.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := host.Handle.LinkSetMTU(ext, mtu); err != nil {
		t.Fatal(err)
	}
	p0, err := host.Handle.LinkByName("peer0")
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Handle.LinkSetNsFd(p0, int(peerNS.NsHandle)); err != nil {
		t.Fatalf("move peer0: %v", err)
	}
	if p0, err = peerNS.Handle.LinkByName("peer0"); err != nil {
		t.Fatal(err)
	}
	if err := peerNS.Handle.AddrAdd(p0, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.2/24"))}); err != nil {
		t.Fatal(err)
	}
	if err := peerNS.Handle.LinkSetUp(p0); err != nil {
		t.Fatal(err)
	}
	var c *net.UDPConn
	if err := peerNS.Do(func() error {
		c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("198.18.0.2:8285")))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var s *udpSock
	if err := host.Do(func() error {
		fd, err := openUDP(netip.MustParseAddrPort("198.18.0.1:0"))
		if err != nil {
			return err
		}
		s, err = newUDPSock(fd)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	if !s.gso.Load() {
		nstest.Missing(t, "the kernel has no UDP GSO (UDP_SEGMENT, Linux 4.18), which this test checks")
	}
	return s, c
}

// sendBatch sends n datagrams of size bytes to dst as one batch built as
// the tx worker builds it, with GSO, and returns what send reports.
func sendBatch(t *testing.T, s *udpSock, dst string, n, size int) (failed int) {
	t.Helper()
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort(dst)},
	})
	p := tbl.lookup(be32(netip.MustParseAddr("10.244.2.1")))
	m := newMmsg(maxSegments, 2*maxSegments)
	m.resetSend()
	for i := range n {
		dg := make([]byte, size)
		dg[0] = byte(i)
		m.add(p, dg, nil, true)
	}
	m.finish()
	if m.n != 1 || m.hdrs[0].Hdr.Controllen == 0 {
		t.Fatalf("the batch is %d messages (GSO control %d bytes), want one GSO message", m.n, m.hdrs[0].Hdr.Controllen)
	}
	failed, err := s.send(m)
	if err != nil {
		t.Fatal(err)
	}
	return failed
}

// TestSendGSOTooBigForRoute: a GSO message whose segments (with the UDP
// and IP headers) exceed the route device's MTU is refused by the kernel
// with EMSGSIZE (EINVAL from older kernels); its datagrams go out one per
// message instead, fragmented, and GSO stays on for other messages. A GSO
// message refused for any other reason counts each of its datagrams as a
// send error.
func TestSendGSOTooBigForRoute(t *testing.T) {
	const size = 1472 // as from a TUN device whose MTU followed a 1500-byte underlay
	s, c := sockPair(t, 1400)

	if failed := sendBatch(t, s, "198.18.0.2:8285", 3, size); failed != 0 {
		t.Errorf("%d send errors for 3 datagrams over an MTU of 1400, want 0", failed)
	}
	if !s.gso.Load() {
		t.Errorf("GSO turned off on the socket: the refusal was about one route's MTU")
	}
	buf := make([]byte, 2000)
	seen := map[byte]bool{}
	for len(seen) < 3 {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := c.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("received datagrams %v, want 0, 1 and 2", seen)
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if n != size {
			t.Fatalf("received %d bytes, want %d", n, size)
		}
		seen[buf[0]] = true
	}

	// No route to 198.19.0.1 (the namespace has only 198.18.0.0/24): every
	// datagram of the message fails, and nothing leaves.
	if failed := sendBatch(t, s, "198.19.0.1:8285", 3, 100); failed != 3 {
		t.Errorf("%d send errors for a message of 3 datagrams without a route, want 3", failed)
	}
}
