package udp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The UDP side of the datapath: many datagrams per system call (recvmmsg,
// sendmmsg) through the Go runtime's poller, with UDP GSO (one sendmmsg
// message carries up to 64 same-sized datagrams for one peer, cut by the
// kernel or the NIC) and UDP GRO (the kernel hands over a train of datagrams
// from one sender as one message, cut here) where the kernel has them.
//
// This is written against golang.org/x/sys/unix rather than with
// golang.org/x/net/ipv4's ReadBatch/WriteBatch: those parse every received
// source address into a new *net.UDPAddr (two allocations per datagram),
// and the peer check needs only the raw four bytes.

const (
	// maxUDPPayload is the most a UDP datagram over IPv4 carries, and the
	// most one GSO message may carry in all.
	maxUDPPayload = 65535 - 20 - 8
	// maxGSOSegments is the kernel's limit on datagrams per GSO message
	// (UDP_MAX_SEGMENTS in Linux up to 6.x).
	maxGSOSegments = 64
	// ctrlSpace holds one control message with a 4-byte payload (UDP_GRO's
	// int; UDP_SEGMENT's u16), padded.
	ctrlSpace = 32
	// sockBuf is the send and receive buffer size asked for, so a burst
	// or a restart of the agent does not overflow the receive queue.
	sockBuf = 4 << 20
)

// openUDP creates the datapath's UDP socket bound to addr, with
// SO_REUSEPORT so that several sockets share the port (one per worker), and
// returns its descriptor (non-blocking, close-on-exec).
func openUDP(addr netip.AddrPort) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("UDP socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("UDP socket: SO_REUSEPORT: %w", err)
	}
	// The filter goes on before the bind: it judges a datagram when it is
	// queued, so one queued before newUDPSock attached it would pass.
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &udpFilter); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("UDP socket: SO_ATTACH_FILTER: %w", err)
	}
	// The *FORCE variants pass net.core.[rw]mem_max with CAP_NET_ADMIN;
	// without it the plain ones give what the limit allows.
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBuf)
	}
	if unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBuf) != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}); err != nil {
		unix.Close(fd)
		return -1, bindError(addr, err)
	}
	return fd, nil
}

// bindError is openUDP's error for a bind of addr that failed with err. It
// runs in the socket's network namespace, where it looks for who holds the
// port when it is in use.
func bindError(addr netip.AddrPort, err error) error {
	if errors.Is(err, unix.EADDRINUSE) {
		return portHeldError(addr, err, holders(DeviceName, false, addr, true))
	}
	return fmt.Errorf("bind UDP %s: %w", addr, err)
}

// portInUse reports whether a socket holds addr (or its port on every
// address): one without SO_REUSEPORT cannot bind it then.
func portInUse(addr netip.AddrPort) bool {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	return errors.Is(unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}), unix.EADDRINUSE)
}

// isUDP returns an error unless fd is a UDP socket over IPv4. Where a
// descriptor is bound (boundAddr) does not say what it is: a TCP socket, a
// ping socket (SOCK_DGRAM, IPPROTO_ICMP: its port is its echo identifier)
// or a UDP-Lite one can be bound to our address and port too.
func isUDP(fd int) error {
	var v [3]int
	for i, opt := range []int{unix.SO_DOMAIN, unix.SO_TYPE, unix.SO_PROTOCOL} {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return fmt.Errorf("not a socket: %w", err)
		}
		v[i] = n
	}
	if v != [3]int{unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP} {
		return fmt.Errorf("a socket of domain %d, type %d, protocol %d, not UDP over IPv4 (%d, %d, %d)",
			v[0], v[1], v[2], unix.AF_INET, unix.SOCK_DGRAM, unix.IPPROTO_UDP)
	}
	return nil
}

// boundAddr returns the address a UDP socket is bound to.
func boundAddr(fd int) (netip.AddrPort, error) {
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return netip.AddrPort{}, err
	}
	in4, ok := sa.(*unix.SockaddrInet4)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("not an IPv4 socket (%T)", sa)
	}
	return netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port)), nil
}

// udpFilter is the datapath sockets' classic BPF filter. It empties every
// datagram whose UDP checksum is 0 (none, which IPv4 allows; the kernel
// then verifies nothing), keeping only its UDP header, so that it reaches
// the datapath as an empty datagram, dropped and counted as malformed
// there; every other datagram passes whole. The datapath does not verify
// the checksums of the packets it coalesces (see offload.go) because the
// kernel verified the outer one: with a filter on the socket it does so
// before running it (udp_queue_rcv_one_skb), dropping a wrong one (Udp
// InCsumErrors); a GRO train holds no datagram without one (the kernel's
// UDP GRO takes only checksummed ones), so its first datagram's checksum
// speaks for all. agentd and flanneld always send one. A filter on a UDP
// socket sees the datagram from its UDP header on: the checksum is the
// 16-bit word at offset 6. It is classic BPF, which needs no capability
// and no library: four instructions.
var udpFilter = unix.SockFprog{Len: uint16(len(udpFilterProg)), Filter: &udpFilterProg[0]}

var udpFilterProg = [...]unix.SockFilter{
	{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: udpCsumOffset},    // A = the UDP checksum
	{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: 0, Jt: 0, Jf: 1}, // A == 0?
	{Code: unix.BPF_RET | unix.BPF_K, K: udpHeaderLen},                   // yes: the UDP header alone
	{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff},                     // no: all of it
}

// udpSock is one datapath socket, wrapping a descriptor of its own (a dup
// of the kept one) registered with the runtime's poller.
type udpSock struct {
	polled
	gro bool        // the kernel coalesces received datagrams (UDP_GRO)
	gso atomic.Bool // sends may carry UDP_SEGMENT; cleared if the kernel refuses
}

// newUDPSock takes over fd (non-blocking), gives its socket udpFilter and
// turns on GRO where the kernel has it. openUDP attached the filter before
// the bind; it is set again by every generation of workers (it stays on the
// socket) because the socket may be an older agent's, kept without one,
// whose backlog queued before then stays unfiltered.
func newUDPSock(fd int) (*udpSock, error) {
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &udpFilter); err != nil {
		return nil, fmt.Errorf("UDP socket: SO_ATTACH_FILTER: %w", err)
	}
	p, err := newPolled(fd, "udp")
	if err != nil {
		return nil, err
	}
	s := &udpSock{polled: p}
	// Both options appeared in Linux 4.18 (GSO) and 5.0 (GRO); without
	// them every datagram is its own message, which works, only slower.
	_ = s.rc.Control(func(fd uintptr) {
		s.gro = unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil
		_, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT)
		s.gso.Store(err == nil)
	})
	return s, nil
}

// mmsg is a batch of message headers for recvmmsg or sendmmsg, allocated
// once per worker. Its syscall functions are bound once, so a call
// allocates nothing.
type mmsg struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet4 // receive: each message's source
	ctrl  []byte                  // ctrlSpace bytes per message
	n     int                     // headers in use

	// Send state: the last message may take more segments while open;
	// segs and seg describe it.
	iovUsed      int
	segs         int
	seg          int
	closed       bool
	peers        []*peer // send: each message's destination
	first        []int   // send: each message's first iovec
	scratch      []int   // send: splitGSO's list of iovecs
	scratchPeers []*peer

	// Results of the last system call.
	done  int
	errno unix.Errno

	recvF, sendF func(fd uintptr) bool

	// Receive: spare and since, see woke (spare.go).
	spare chan<- struct{}
	since int64
}

func newMmsg(msgs, iovs int) *mmsg {
	m := &mmsg{
		hdrs:         make([]unix.Mmsghdr, msgs),
		iovs:         make([]unix.Iovec, iovs),
		names:        make([]unix.RawSockaddrInet4, msgs),
		ctrl:         make([]byte, msgs*ctrlSpace),
		peers:        make([]*peer, msgs),
		first:        make([]int, msgs),
		scratch:      make([]int, 0, iovs),
		scratchPeers: make([]*peer, 0, iovs),
	}
	m.recvF = m.recvmmsg
	m.sendF = m.sendmmsg
	return m
}

// prepareRecv points message i at bufs[i] (one iovec each).
func (m *mmsg) prepareRecv(bufs [][]byte) {
	m.n = len(bufs)
	for i, b := range bufs {
		m.iovs[i].Base = &b[0]
		m.iovs[i].SetLen(len(b))
		h := &m.hdrs[i].Hdr
		h.Name = (*byte)(unsafe.Pointer(&m.names[i]))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &m.iovs[i]
		h.SetIovlen(1)
		h.Control = &m.ctrl[i*ctrlSpace]
		h.SetControllen(ctrlSpace)
		h.Flags = 0
		m.hdrs[i].Len = 0
	}
}

// received describes message i after recv: its length, its source (big
// endian), the GRO segment size (0: one datagram) and whether it was cut.
func (m *mmsg) received(i int) (n int, src uint32, seg int, trunc bool) {
	h := &m.hdrs[i]
	src = binary.BigEndian.Uint32(m.names[i].Addr[:])
	seg = groSegment(m.ctrl[i*ctrlSpace : i*ctrlSpace+int(h.Hdr.Controllen)])
	return int(h.Len), src, seg, h.Hdr.Flags&unix.MSG_TRUNC != 0
}

// groSegment reads the UDP_GRO control message, 0 if there is none.
func groSegment(b []byte) int {
	for len(b) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(b) {
			return 0
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			return int(binary.NativeEndian.Uint32(b[unix.CmsgLen(0):]))
		}
		b = b[min(len(b), unix.CmsgSpace(l-unix.CmsgLen(0))):]
	}
	return 0
}

// resetSend empties the batch.
func (m *mmsg) resetSend() {
	m.n, m.iovUsed, m.segs, m.seg, m.closed = 0, 0, 0, 0, false
}

// add appends the datagram hdr+payload for p (payload may be empty; two
// iovecs per datagram either way): to the last message as one more GSO
// segment when gso allows it, else as a new message. A message's segments
// all have the length of its first, but for a shorter last one.
func (m *mmsg) add(p *peer, hdr, payload []byte, gso bool) {
	n := len(hdr) + len(payload)
	if gso && m.n > 0 && m.peers[m.n-1] == p && !m.closed && n <= m.seg &&
		m.segs < maxGSOSegments && (m.segs+1)*m.seg <= maxUDPPayload {
		m.setIovs(hdr, payload)
		m.segs++
		m.hdrs[m.n-1].Hdr.SetIovlen(2 * m.segs)
		m.closed = n < m.seg
		return
	}
	m.finish()
	i := m.n
	m.n++
	m.peers[i] = p
	m.first[i] = m.iovUsed
	h := &m.hdrs[i].Hdr
	h.Name = (*byte)(unsafe.Pointer(&p.sa))
	h.Namelen = unix.SizeofSockaddrInet4
	h.Iov = &m.iovs[m.iovUsed]
	m.setIovs(hdr, payload)
	h.SetIovlen(2)
	h.Control = nil
	h.SetControllen(0)
	h.Flags = 0
	m.segs, m.seg, m.closed = 1, n, false
}

func (m *mmsg) setIovs(hdr, payload []byte) {
	for _, b := range [2][]byte{hdr, payload} {
		v := &m.iovs[m.iovUsed]
		v.Base = nil
		if len(b) > 0 {
			v.Base = &b[0]
		}
		v.SetLen(len(b))
		m.iovUsed++
	}
}

// finish gives the last message its UDP_SEGMENT control message if it
// carries more than one datagram.
func (m *mmsg) finish() {
	if m.n == 0 || m.segs < 2 {
		return
	}
	i := m.n - 1
	c := m.ctrl[i*ctrlSpace : (i+1)*ctrlSpace]
	h := (*unix.Cmsghdr)(unsafe.Pointer(&c[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(c[unix.CmsgLen(0):], uint16(m.seg))
	m.hdrs[i].Hdr.Control = &c[0]
	m.hdrs[i].Hdr.SetControllen(unix.CmsgSpace(2))
}

func (m *mmsg) recvmmsg(fd uintptr) bool {
	n, e, ready := rawCall(unix.SYS_RECVMMSG, fd, unsafe.Pointer(&m.hdrs[0]), m.n)
	if ready {
		m.done, m.errno = int(n), e
		m.since = woke(m.spare, m.since)
	} else if m.since == 0 {
		m.since = waitStart()
	}
	return ready
}

func (m *mmsg) sendmmsg(fd uintptr) bool {
	n, e, ready := rawCall(unix.SYS_SENDMMSG, fd, unsafe.Pointer(&m.hdrs[m.done]), m.n-m.done)
	switch {
	case !ready:
	case e != 0:
		m.errno = e
	default:
		m.done += int(n)
	}
	return ready
}

// recv receives up to m.n datagrams (see prepareRecv), waiting for at least
// one, and returns how many messages were filled.
func (s *udpSock) recv(m *mmsg) (int, error) {
	m.done, m.errno = 0, 0
	if err := s.rc.Read(m.recvF); err != nil {
		return 0, err
	}
	if m.errno != 0 {
		return 0, os.NewSyscallError("recvmmsg", m.errno)
	}
	return m.done, nil
}

// splitGSO turns every message not sent yet into one message per datagram
// (each two iovecs). The batch was built with one header per datagram at
// most, so they fit.
func (m *mmsg) splitGSO() {
	m.scratch = m.scratch[:0]
	m.scratchPeers = m.scratchPeers[:0]
	for i := m.done; i < m.n; i++ {
		for j := 0; j < int(m.hdrs[i].Hdr.Iovlen); j += 2 {
			m.scratch = append(m.scratch, m.first[i]+j)
			m.scratchPeers = append(m.scratchPeers, m.peers[i])
		}
	}
	n := m.done
	for k, iov := range m.scratch {
		p := m.scratchPeers[k]
		h := &m.hdrs[n].Hdr
		h.Name = (*byte)(unsafe.Pointer(&p.sa))
		h.Namelen = unix.SizeofSockaddrInet4
		h.Iov = &m.iovs[iov]
		h.SetIovlen(2)
		h.Control = nil
		h.SetControllen(0)
		m.peers[n], m.first[n] = p, iov
		n++
	}
	m.n = n
}

// send sends every message of the batch. A message the kernel refuses is
// skipped and its datagrams counted in failed. A GSO message refused for
// what GSO asks of the route makes the rest of the batch go out one
// datagram per message, which the kernel fragments where it must:
//   - EIO: the route's device cannot checksum, which holds for every
//     message, so GSO is turned off on the socket too;
//   - EMSGSIZE (EINVAL from older kernels): a segment with its UDP and IP
//     headers is larger than the route device's MTU (the underlay's MTU
//     lowered since the device's was set, or a peer behind a smaller one).
//     That is one route's matter, so GSO stays on for the next batch.
//
// err is set only when the socket is closed.
func (s *udpSock) send(m *mmsg) (failed int, err error) {
	m.finish()
	m.done = 0
	for m.done < m.n {
		m.errno = 0
		if err := s.rc.Write(m.sendF); err != nil {
			return failed, err
		}
		if m.errno == 0 {
			continue
		}
		h := &m.hdrs[m.done].Hdr
		if h.Controllen != 0 {
			switch m.errno {
			case unix.EIO:
				s.gso.Store(false)
				m.splitGSO()
				continue
			case unix.EMSGSIZE, unix.EINVAL:
				m.splitGSO()
				continue
			}
		}
		failed += int(h.Iovlen) / 2 // two iovecs per datagram
		m.done++
	}
	return failed, nil
}
