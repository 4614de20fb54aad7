package udp

// The receive side trusts the outer UDP checksum, which the kernel checked,
// for the inner packets it coalesces (offload.go), and keeps datagrams
// without one out of the datapath (udpFilter).

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestDecapTrustsOuterChecksum: a received TCP segment or UDP datagram
// whose own checksum does not verify heads or joins a coalesced packet like
// any other, as the outer UDP checksum, checked by the kernel before the
// datagram reached the socket, covers it: it was sent so. The packet cut
// again gives back the bytes received, with checksums that verify. Before,
// every segment was summed again, and one that did not verify was written
// alone (part of the 8.6 to 22 % of the agents' CPU that perf put in the
// checksums of cut and received segments).
func TestDecapTrustsOuterChecksum(t *testing.T) {
	const mss = 1000
	seg := func(i int) []byte {
		return tcpPacket("10.244.2.5", "10.244.1.5", uint16(10+i), uint32(1000+i*mss), tcpACK, payload(i*mss, mss))
	}
	dg := func(i int) []byte {
		return udpDatagram("10.244.2.5", "10.244.1.5", uint16(10+i), payload(i*mss, mss))
	}
	// A payload byte flipped after the checksum was computed.
	corrupt := func(p []byte) []byte { p[len(p)-3] ^= 0x20; return p }
	for _, tc := range []struct {
		name  string
		train [][]byte
	}{
		{"TCP, the head", [][]byte{corrupt(seg(0)), seg(1), seg(2)}},
		{"TCP, in the middle", [][]byte{seg(0), seg(1), corrupt(seg(2)), seg(3), seg(4)}},
		{"TCP, the last", [][]byte{seg(0), seg(1), corrupt(seg(2))}},
		{"UDP, the head", [][]byte{corrupt(dg(0)), dg(1), dg(2)}},
		{"UDP, in the middle", [][]byte{dg(0), corrupt(dg(1)), dg(2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, dev := newTestRx("198.18.0.2", tc.train)
			if err := w.decap(w.tbl.Load(), 1); err != nil {
				t.Fatal(err)
			}
			if w.local[pass] != uint64(len(tc.train)) {
				t.Fatalf("counts %v: want all %d forwarded", w.local, len(tc.train))
			}
			if len(dev.packets) != 1 {
				t.Fatalf("%d packets written, want the %d segments as one", len(dev.packets), len(tc.train))
			}
			h := dev.vnets[0]
			gp, ok := parseGSO(dev.packets[0], h)
			if !ok || h.flags != vnetNeedsCsum || gp.segments != len(tc.train) {
				t.Fatalf("written with %+v: %+v, %v; want one packet of %d segments", h, gp, ok, len(tc.train))
			}
			valid := tcpValid
			if gp.udp {
				valid = udpValid
			}
			for i := range gp.segments {
				hdr := make([]byte, gp.hdrLen)
				got := append(hdr, gp.segment(dev.packets[0], i, hdr)...)
				if !valid(got) || string(got[gp.hdrLen:]) != string(tc.train[i][gp.hdrLen:]) {
					t.Fatalf("segment %d cut again: checksums valid %v, payload as received %v",
						i, valid(got), string(got[gp.hdrLen:]) == string(tc.train[i][gp.hdrLen:]))
				}
			}
		})
	}
}

// TestUDPChecksumChecked: on the real kernel, a peer's datagram without a
// UDP checksum (0, which IPv4 allows and the kernel then verifies nothing)
// carrying an echo request reaches the datapath empty (udpFilter) and is
// dropped and counted as malformed, not answered; one whose UDP checksum is
// wrong never reaches it (the kernel drops it and counts it in Udp
// InCsumErrors); one with the right checksum is answered. Before, the one
// without a checksum was forwarded and answered, and its inner packet,
// which no checksum covered on the way, would have been coalesced with
// NEEDS_CSUM once the datapath stopped verifying inner checksums.
func TestUDPChecksumChecked(t *testing.T) {
	h := newTestHost(t)
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
	replies := h.udpFrom("198.18.0.2")
	raw := h.rawUDPFrom("198.18.0.2")
	csumErrors := h.udpCsumErrors()

	send := func(pkt []byte, mangle func(sum uint16) uint16) {
		t.Helper()
		dg := make([]byte, udpHeaderLen+len(pkt))
		binary.BigEndian.PutUint16(dg[0:], DefaultPort)
		binary.BigEndian.PutUint16(dg[2:], DefaultPort)
		binary.BigEndian.PutUint16(dg[4:], uint16(len(dg)))
		copy(dg[udpHeaderLen:], pkt)
		ip := ipPacket("198.18.0.2", "198.18.0.1", protoUDP, 64, nil)
		sum := ^onesSum(dg, pseudoSum(ip, protoUDP, len(dg)))
		if sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(dg[udpCsumOffset:], mangle(sum))
		if err := unix.Sendto(raw, dg, 0, &unix.SockaddrInet4{Addr: [4]byte{198, 18, 0, 1}}); err != nil {
			t.Fatal(err)
		}
	}
	none := func(uint16) uint16 { return 0 }
	wrong := func(s uint16) uint16 { return s ^ 0x0101 }
	right := func(s uint16) uint16 { return s }
	send(echoRequest("10.244.2.5", "10.244.1.0", 1), none)
	send(echoRequest("10.244.2.5", "10.244.1.0", 2), wrong)
	// The same flow, so the same socket of the reuseport group, after
	// the two: once it is answered, they were taken or dropped.
	send(echoRequest("10.244.2.5", "10.244.1.0", 3), right)
	if ids := repliesUntil(t, replies, 3); len(ids) != 1 {
		t.Errorf("echo replies %v came back, want 3 alone", ids)
	}
	h.waitCounts(1, map[string]uint64{"malformed": 1, "badChecksum": 0})
	if n := h.udpCsumErrors(); n != csumErrors+1 {
		t.Errorf("Udp InCsumErrors went from %d to %d, want one more", csumErrors, n)
	}
}

// repliesUntil reads echo replies from c until the one with identifier
// last, and returns the identifiers of all it read.
func repliesUntil(t *testing.T, c *net.UDPConn, last uint16) []uint16 {
	t.Helper()
	var ids []uint16
	buf := make([]byte, 2000)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no echo reply %d (replies %v): %v", last, ids, err)
		}
		p := buf[:n]
		if h, v := parseIPv4(p); v == pass && h.proto == protoICMP && p[h.hlen] == 0 {
			id := binary.BigEndian.Uint16(p[h.hlen+4:])
			ids = append(ids, id)
			if id == last {
				return ids
			}
		}
	}
}

// rawUDPFrom opens a raw UDP socket in the peer namespace bound to addr:
// what it sends is a UDP header and payload of the caller's, checksum
// included, to which the kernel adds only the IPv4 header.
func (h *testHost) rawUDPFrom(addr string) int {
	h.t.Helper()
	fd := -1
	if err := h.peer.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(addr).As4()})
	}); err != nil {
		h.t.Fatalf("raw UDP socket: %v", err)
	}
	h.t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// udpCsumErrors returns the host namespace's Udp InCsumErrors.
func (h *testHost) udpCsumErrors() uint64 {
	h.t.Helper()
	var n uint64
	if err := h.host.Do(func() (err error) {
		n, err = snmpCounter("/proc/thread-self/net/snmp", "Udp", "InCsumErrors")
		return err
	}); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// snmpCounter reads counter name of protocol proto from path, a file in
// the format of /proc/net/snmp: per protocol a line of names, then a line
// of values, both starting with "<proto>:".
func snmpCounter(path, proto, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != proto+":" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == name && i < len(fields) {
				return strconv.ParseUint(fields[i], 10, 64)
			}
		}
		break
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no %s %s", path, proto, name)
}
