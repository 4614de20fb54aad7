package udp

// An ICMP error from a peer speaks about a packet of ours: it is accepted
// only if that packet went to the peer. Else a peer (or anyone who can send
// from its public IP on the underlay) could end or shrink our pods' flows
// to any other host, which it has no other way to reach.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// icmpAbout is the ICMP error of type typ and code that from sends to to
// about a UDP datagram from quotedSrc to quotedDst (address:port), quoting
// its IPv4 header and 8 bytes as a router at least does.
func icmpAbout(from, to string, typ, code uint8, quotedSrc, quotedDst string) []byte {
	s, d := netip.MustParseAddrPort(quotedSrc), netip.MustParseAddrPort(quotedDst)
	udp := make([]byte, 8)
	binary.BigEndian.PutUint16(udp[0:2], s.Port())
	binary.BigEndian.PutUint16(udp[2:4], d.Port())
	binary.BigEndian.PutUint16(udp[4:6], 8)
	quoted := ipPacket(s.Addr().String(), d.Addr().String(), unix.IPPROTO_UDP, 63, udp)
	icmp := append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, quoted...)
	binary.BigEndian.PutUint16(icmp[2:4], checksum(icmp))
	return ipPacket(from, to, protoICMP, 63, icmp)
}

// TestICMPErrorAboutAnotherHostsPacket: a known peer (10.244.2.0/24 at
// 198.18.0.2) sends ICMP port-unreachable errors, from its subnet to our
// flannel0 address, about datagrams our host sent to a pod of another peer
// (10.244.3.5) and to a pod of our own subnet (10.244.1.7), neither of
// which ever went through it. Both are dropped as spoofedSource and the
// connected sockets they name see no error; one about a datagram to the
// peer's own pod is delivered, and its socket gets ECONNREFUSED. Before,
// all three were delivered: the peer could fail any connected UDP socket
// of our pods (a DNS client's, say) toward any host, and with "fragmentation
// needed" shrink their path MTU to it to 552 bytes.
func TestICMPErrorAboutAnotherHostsPacket(t *testing.T) {
	h := newTestHost(t)
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type))
	peer := h.udpFrom("198.18.0.2")

	dial := func(local, remote string) *net.UDPConn {
		t.Helper()
		var c *net.UDPConn
		err := h.host.Do(func() (err error) {
			c, err = net.DialUDP("udp4", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(local)),
				net.UDPAddrFromAddrPort(netip.MustParseAddrPort(remote)))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	toOther := dial("10.244.1.0:4000", "10.244.3.5:53")
	toOurs := dial("10.244.1.0:4001", "10.244.1.7:53")
	toPeer := dial("10.244.1.0:4002", "10.244.2.5:53")
	for _, quoted := range [][2]string{
		{"10.244.1.0:4000", "10.244.3.5:53"},
		{"10.244.1.0:4001", "10.244.1.7:53"},
		{"10.244.1.0:4002", "10.244.2.5:53"},
	} {
		pkt := icmpAbout("10.244.2.1", "10.244.1.0", icmpDestUnreachable, 3, quoted[0], quoted[1])
		if _, err := peer.WriteToUDP(pkt, hostAddr); err != nil {
			t.Fatal(err)
		}
	}

	buf := make([]byte, 100)
	toPeer.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := toPeer.Read(buf); !errors.Is(err, unix.ECONNREFUSED) {
		t.Errorf("the socket to the peer's pod: %v, want ECONNREFUSED from the peer's error", err)
	}
	// The three are judged in turn; wait until the datapath has counted all.
	deadline := time.Now().Add(2 * time.Second)
	for s := h.b.Stats(); s.Received+s.Dropped["spoofedSource"] < 3 && time.Now().Before(deadline); s = h.b.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if s := h.b.Stats(); s.Received != 1 || s.Dropped["spoofedSource"] != 2 {
		t.Errorf("written into %s %d, dropped as spoofedSource %d; want 1 and 2", DeviceName, s.Received, s.Dropped["spoofedSource"])
	}
	for name, c := range map[string]*net.UDPConn{"another peer's pod": toOther, "a pod of our own subnet": toOurs} {
		if err := soError(c); err != nil {
			t.Errorf("the socket to %s got %v from the peer's forged error", name, err)
		}
	}
}

// soError returns the pending error of socket c (SO_ERROR), nil if none.
func soError(c *net.UDPConn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var soerr int
	if err := rc.Control(func(fd uintptr) { soerr, err = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR) }); err != nil {
		return err
	}
	if err != nil {
		return err
	}
	if soerr != 0 {
		return unix.Errno(soerr)
	}
	return nil
}

// TestAcceptICMPErrorQuote: which ICMP messages from a peer accept lets in.
// The peer 198.18.0.2 holds 10.244.2.0/24 and 10.244.4.0/24 (two leases
// behind one public IP); 10.244.3.0/24 is another peer's.
func TestAcceptICMPErrorQuote(t *testing.T) {
	tbl := newTable(netip.MustParsePrefix("10.244.1.0/24"), []entry{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Dst: netip.MustParseAddrPort("198.18.0.3:8285")},
		{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Dst: netip.MustParseAddrPort("198.18.0.2:8285")},
	})
	peer := be32(netip.MustParseAddr("198.18.0.2"))
	about := func(from string, typ, code uint8, quotedDst string) []byte {
		return icmpAbout(from, "10.244.1.9", typ, code, "10.244.1.9:4000", quotedDst)
	}
	// firstFragment is an error cut as a first fragment of 8 bytes of
	// payload, the ICMP header alone: its quote would be in the next.
	firstFragment := func(b []byte) []byte {
		b = bytes.Clone(b[:28])
		binary.BigEndian.PutUint16(b[2:4], 28)
		binary.BigEndian.PutUint16(b[6:8], 0x2000) // more fragments
		binary.BigEndian.PutUint16(b[10:12], 0)
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
		return b
	}
	laterFragment := func(b []byte) []byte {
		b = bytes.Clone(b)
		binary.BigEndian.PutUint16(b[6:8], 1) // offset 8 bytes, the last
		binary.BigEndian.PutUint16(b[10:12], 0)
		binary.BigEndian.PutUint16(b[10:12], checksum(b[:20]))
		return b
	}
	// withOptions puts 4 bytes of options (NOPs) into b's header.
	withOptions := func(b []byte) []byte {
		o := append(append(bytes.Clone(b[:20]), 1, 1, 1, 1), b[20:]...)
		o[0] = 0x46
		binary.BigEndian.PutUint16(o[2:4], uint16(len(o)))
		binary.BigEndian.PutUint16(o[10:12], 0)
		binary.BigEndian.PutUint16(o[10:12], checksum(o[:24]))
		return o
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want verdict
	}{
		{"port unreachable from the peer's pod about a packet to it", about("10.244.2.5", 3, 3, "10.244.2.5:53"), pass},
		{"host unreachable from the peer's bridge", about("10.244.2.1", 3, 1, "10.244.2.77:53"), pass},
		{"time exceeded from the peer's flannel0", about("10.244.2.0", 11, 0, "10.244.2.5:53"), pass},
		{"about a packet to the peer's other subnet", about("10.244.2.5", 3, 3, "10.244.4.5:53"), pass},
		{"from the peer's node about a packet to it", about("198.18.0.2", 3, 3, "198.18.0.2:53"), pass},
		{"from the peer's node about a packet to its pod", about("198.18.0.2", 3, 3, "10.244.2.5:53"), pass},
		{"about a packet to another peer's pod", about("10.244.2.5", 3, 3, "10.244.3.5:53"), dropSpoofed},
		{"about a packet to a pod of ours", about("10.244.2.5", 3, 3, "10.244.1.7:53"), dropSpoofed},
		{"about a packet outside the cluster", about("10.244.2.5", 3, 3, "192.0.2.7:53"), dropSpoofed},
		{"about a packet to another host's public IP", about("198.18.0.2", 3, 3, "198.18.0.3:53"), dropSpoofed},
		{"fragmentation needed about another peer's pod", about("10.244.2.5", 3, 4, "10.244.3.5:53"), dropSpoofed},
		{"time exceeded about another peer's pod", about("10.244.2.0", 11, 0, "10.244.3.5:53"), dropSpoofed},
		{"source quench about another peer's pod", about("10.244.2.5", 4, 0, "10.244.3.5:53"), dropSpoofed},
		{"redirect about another peer's pod", about("10.244.2.5", 5, 1, "10.244.3.5:53"), dropSpoofed},
		{"parameter problem about another peer's pod", about("10.244.2.5", 12, 0, "10.244.3.5:53"), dropSpoofed},
		{"with options, about a packet to the peer", withOptions(about("10.244.2.5", 3, 3, "10.244.2.5:53")), pass},
		{"with options, about another peer's pod", withOptions(about("10.244.2.5", 3, 3, "10.244.3.5:53")), dropSpoofed},
		{"a first fragment without its quote", firstFragment(about("10.244.2.5", 3, 3, "10.244.2.5:53")), dropSpoofed},
		{"a later fragment", laterFragment(about("10.244.2.5", 3, 3, "10.244.3.5:53")), pass},
		{"an echo request", ipPacket("10.244.2.5", "10.244.1.9", protoICMP, 64, echo), pass},
		{"an echo reply", ipPacket("10.244.2.5", "10.244.1.9", protoICMP, 64, append([]byte{0}, echo[1:]...)), pass},
		{"an empty ICMP message", ipPacket("10.244.2.5", "10.244.1.9", protoICMP, 64, nil), pass},
		{"a UDP datagram carrying an ICMP error's bytes", ipPacket("10.244.2.5", "10.244.1.9", unix.IPPROTO_UDP, 64,
			about("10.244.2.5", 3, 3, "10.244.3.5:53")[20:]), pass},
	} {
		if _, v := tbl.accept(peer, tc.pkt); v != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, v, tc.want)
		}
	}
}
