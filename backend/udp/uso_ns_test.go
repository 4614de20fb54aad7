package udp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"golang.org/x/sys/unix"
)

// udpSegmentConn is a UDP socket in ns, bound to src if given, connected to
// dst, whose sends are cut into datagrams of seg bytes (UDP_SEGMENT): one
// send of n×seg bytes is one packet of up to 64 KiB through the stack, cut
// by the kernel or the device that takes it (USO), or taken whole by a
// socket with UDP_GRO.
func udpSegmentConn(t *testing.T, ns *nstest.NS, src, dst string, seg int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	err := ns.Do(func() error {
		var laddr *net.UDPAddr
		if src != "" {
			laddr = net.UDPAddrFromAddrPort(netip.MustParseAddrPort(src))
		}
		var err error
		c, err = net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(dst)))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT, seg) }); err != nil || serr != nil {
		nstest.Missing(t, "UDP_SEGMENT: %v %v", err, serr)
	}
	return c
}

// TestUDPSegmentSend: a socket of the host sends 10 datagrams of 1200 bytes
// in one send (UDP_SEGMENT) to a pod behind the peer; the peer receives
// exactly those, in order, each one whole inner UDP/IPv4 packet in a
// datagram of its own (flannel's wire format), checksums valid, TTL
// decremented, each counted. With the device's USO (Linux 6.2 on) the
// datapath is handed the 12 000 bytes at once and cuts them; where
// TUNSETOFFLOAD refuses USO (EINVAL, as before Linux 6.2) the datapath runs
// with TSO alone, says so, and the kernel cuts them before the device.
// Before, the datapath asked for TSO alone and said nothing of offloads.
func TestUDPSegmentSend(t *testing.T) {
	const seg, n = 1200, 10
	for _, tc := range []struct {
		name      string
		refuseUSO bool
		offloads  string
	}{
		{"USO", false, "csum,tso4,uso4,uso6"},
		{"USO refused", true, "csum,tso4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var asked []int
			h := newTestHost(t, func(h *testHost) {
				h.setOffload = func(fd, offloads int) error {
					mu.Lock()
					asked = append(asked, offloads)
					mu.Unlock()
					if tc.refuseUSO && offloads&(unix.TUN_F_USO4|unix.TUN_F_USO6) != 0 {
						return unix.EINVAL
					}
					return setTUNOffload(fd, offloads)
				}
			})
			if !h.logged(`"offloads"="` + tc.offloads + `"`) {
				if !tc.refuseUSO && h.logged(`"offloads"="csum,tso4"`) {
					nstest.Missing(t, "the kernel refuses TUN_F_USO4 (Linux 6.2 has it)")
				}
				t.Fatalf("no ready line with offloads %s", tc.offloads)
			}
			mu.Lock()
			first := append([]int{}, asked...)
			mu.Unlock()
			if len(first) == 0 || first[0] != tunOffloads {
				t.Fatalf("asked the device for %v, want %#x first", first, tunOffloads)
			}
			h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
			peer := h.udpFrom("198.18.0.2")
			c := udpSegmentConn(t, h.host, "", "10.244.2.5:4433", seg)
			msg := payload(0, n*seg)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 2048)
			peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			for i := range n {
				m, _, err := peer.ReadFromUDP(buf)
				if err != nil {
					t.Fatalf("datagram %d of %d: %v", i, n, err)
				}
				pkt := buf[:m]
				ih, v := parseIPv4(pkt)
				if v != pass || ih.tlen != m || ih.proto != protoUDP || ih.ttl != 63 || !udpValid(pkt) {
					t.Fatalf("datagram %d: %x...: want one UDP/IPv4 packet, TTL 63, checksums valid", i, pkt[:min(m, 28)])
				}
				if got, want := pkt[ih.hlen+8:], msg[i*seg:(i+1)*seg]; string(got) != string(want) ||
					binary.BigEndian.Uint16(pkt[ih.hlen+2:]) != 4433 {
					t.Fatalf("datagram %d: %d payload bytes to port %d, want the send's bytes %d to %d to 4433",
						i, len(got), binary.BigEndian.Uint16(pkt[ih.hlen+2:]), i*seg, (i+1)*seg)
				}
			}
			peer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if m, _, err := peer.ReadFromUDP(buf); err == nil {
				t.Fatalf("a datagram more: %x", buf[:min(m, 28)])
			}
			// The worker counts once sendmmsg returns, maybe after the
			// peer got the datagrams.
			for deadline := time.Now().Add(2 * time.Second); h.b.Stats().Sent != n; {
				if time.Now().After(deadline) {
					t.Fatalf("Sent %d, want %d", h.b.Stats().Sent, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// TestUDPDatagramsCoalesced: the peer sends 10 inner UDP datagrams of 1200
// bytes, one per outer datagram, in one send (UDP_SEGMENT): the datapath's
// socket (UDP_GRO) receives them as one train, and the datapath writes
// them into the device as one USO packet. A socket of the host with
// UDP_GRO reads them in one read, its datagram size 1200 in the control
// message; one without reads them one by one, as they were sent. Where
// TUNSETOFFLOAD refuses USO (as before Linux 6.2, whose device refuses such
// a packet too) they are written one by one, and both sockets read them so.
// Before, each was written alone, and the first socket read 10 times too.
func TestUDPDatagramsCoalesced(t *testing.T) {
	const seg, n = 1200, 10
	singles := []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	for _, tc := range []struct {
		refuseUSO bool
		port      int
		gro       bool
		reads     []int // datagrams per read
	}{{false, 4433, true, []int{n}}, {false, 4434, false, singles}, {true, 4433, true, singles}, {true, 4434, false, singles}} {
		t.Run(fmt.Sprintf("refuseUSO=%v/UDP_GRO=%v", tc.refuseUSO, tc.gro), func(t *testing.T) {
			h := newTestHost(t, func(h *testHost) {
				if tc.refuseUSO {
					h.setOffload = func(fd, offloads int) error {
						if offloads&(unix.TUN_F_USO4|unix.TUN_F_USO6) != 0 {
							return unix.EINVAL
						}
						return setTUNOffload(fd, offloads)
					}
				}
			})
			h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
			var rx *net.UDPConn
			err := h.host.Do(func() error {
				var err error
				rx, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 244, 1, 0), Port: tc.port})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			defer rx.Close()
			if tc.gro {
				rc, err := rx.SyscallConn()
				if err != nil {
					t.Fatal(err)
				}
				var serr error
				if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) }); err != nil || serr != nil {
					nstest.Missing(t, "UDP_GRO: %v %v", err, serr)
				}
			}
			msg := payload(0, n*seg)
			var train []byte
			for i := range n {
				d := udpDatagram("10.244.2.5", "10.244.1.0", uint16(i), msg[i*seg:(i+1)*seg])
				binary.BigEndian.PutUint16(d[22:], uint16(tc.port))
				binary.BigEndian.PutUint16(d[26:], 0)
				c := ^onesSum(d[20:], pseudoSum(d, protoUDP, len(d)-20))
				if c == 0 {
					c = 0xffff
				}
				binary.BigEndian.PutUint16(d[26:], c)
				train = append(train, d...)
			}
			before := h.b.Stats().Received
			peer := udpSegmentConn(t, h.peer, "198.18.0.2:8285", "198.18.0.1:8285", 28+seg)
			if _, err := peer.Write(train); err != nil {
				t.Fatal(err)
			}
			buf, oob := make([]byte, 65536), make([]byte, 64)
			rx.SetReadDeadline(time.Now().Add(5 * time.Second))
			var reads []int
			got := 0
			for got < n {
				m, oobn, _, _, err := rx.ReadMsgUDP(buf, oob)
				if err != nil {
					t.Fatalf("after %d datagrams in reads %v: %v", got, reads, err)
				}
				size := m
				cms, err := unix.ParseSocketControlMessage(oob[:oobn])
				if err != nil {
					t.Fatal(err)
				}
				for _, cm := range cms {
					if cm.Header.Level == unix.SOL_UDP && cm.Header.Type == unix.UDP_GRO && len(cm.Data) >= 4 {
						size = int(binary.NativeEndian.Uint32(cm.Data))
					}
				}
				if size != seg || got*seg+m > len(msg) || string(buf[:m]) != string(msg[got*seg:got*seg+m]) {
					t.Fatalf("read %d: %d bytes of datagrams of %d, want the next of the send's datagrams of %d", len(reads), m, size, seg)
				}
				reads = append(reads, (m+seg-1)/seg)
				got += (m + seg - 1) / seg
			}
			if fmt.Sprint(reads) != fmt.Sprint(tc.reads) {
				t.Fatalf("datagrams per read %v, want %v", reads, tc.reads)
			}
			for deadline := time.Now().Add(2 * time.Second); h.b.Stats().Received != before+n; {
				if time.Now().After(deadline) {
					t.Fatalf("Received %d, want %d", h.b.Stats().Received-before, n)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}
