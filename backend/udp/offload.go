package udp

import (
	"encoding/binary"
	"math/bits"
)

// TUN offloads, done here rather than with golang.zx2c4.com/wireguard/tun:
// that library splits a TSO packet by copying every segment into a buffer of
// its own, and verifies the TCP checksum of every received packet before it
// copies it onto the packet it coalesces into. Measured with perf on the
// bench cluster, its checksums, copies and flow tables took 45 % of the udp
// agents' CPU. Here a TSO or USO packet (a pod's UDP_SEGMENT send, handed
// over whole since Linux 6.2) is cut without a copy (each segment is two
// iovecs: a header built here and its payload where the kernel put it), and
// received packets are coalesced without a copy (one writev of the head
// packet and the others' payloads).
//
// A received segment's TCP (or UDP) checksum is not verified before it
// heads or joins a coalesced packet, although that packet goes to the
// device with NEEDS_CSUM, which the kernel takes as checksummed already:
// the kernel verified the outer UDP checksum of every datagram before it
// reached our socket (in software or in the NIC; a wrong one is dropped and
// counted in Udp InCsumErrors), and that checksum covers the whole inner
// packet from the moment the sender computed it. A datagram without one
// (0, which IPv4 allows) is not verified: the sockets' filter (udpFilter)
// keeps those out of the datapath. What the inner checksum covers besides
// is the sender's side between its two checksums: on an agentd host, from
// the agent's cut of a TSO packet (segment computes it) to the send; on a
// flanneld host, from the kernel's TCP stack through flanneld's read and
// send. Verifying them was a pass over every byte received:
// BenchmarkForwardingPath/decap took 5.2 µs per 46-segment train with it,
// 2.9 without (the checksums of cut and received segments together were
// 8.6 to 22 % of the udp agents' CPU with perf on the bench cluster).
//
// A packet not coalesced is written alone as it came, for the receiving
// stack to check.

const (
	// vnetHdrLen is sizeof(struct virtio_net_hdr), which the device puts
	// before every packet it hands over and expects before every packet
	// written (TUNSETVNETHDRSZ).
	vnetHdrLen = 10

	vnetNeedsCsum = 1 // VIRTIO_NET_HDR_F_NEEDS_CSUM
	gsoNone       = 0 // VIRTIO_NET_HDR_GSO_NONE
	gsoTCPv4      = 1 // VIRTIO_NET_HDR_GSO_TCPV4
	gsoUDPL4      = 5 // VIRTIO_NET_HDR_GSO_UDP_L4

	protoTCP = 6
	protoUDP = 17

	udpHeaderLen = 8
	// udpCsumOffset is where the checksum lies in a UDP header.
	udpCsumOffset = 6

	tcpMinHeader = 20
	tcpFIN       = 0x01
	tcpPSH       = 0x08
	tcpACK       = 0x10
	tcpCWR       = 0x80
	// tcpCsumOffset is where the checksum lies in a TCP header.
	tcpCsumOffset = 16
	// tcpMinMSS is the smallest MSS Linux uses (TCP_MIN_MSS); the most
	// segments one TSO packet may hold follows from it.
	tcpMinMSS   = 88
	maxSegments = (bigBuf + tcpMinMSS - 1) / tcpMinMSS
	// maxHeaders is the longest IPv4 and TCP header together.
	maxHeaders = 60 + 60
	// ipDF is the don't-fragment flag in the IPv4 flags and fragment
	// offset word.
	ipDF = 0x4000
)

// vnetHdr is struct virtio_net_hdr, in the machine's byte order (the
// device's "legacy" virtio header, which is what TUN uses unless told
// otherwise).
type vnetHdr struct {
	flags      uint8
	gsoType    uint8
	hdrLen     uint16
	gsoSize    uint16
	csumStart  uint16
	csumOffset uint16
}

func decodeVnet(b []byte) vnetHdr {
	return vnetHdr{
		flags:      b[0],
		gsoType:    b[1],
		hdrLen:     binary.NativeEndian.Uint16(b[2:]),
		gsoSize:    binary.NativeEndian.Uint16(b[4:]),
		csumStart:  binary.NativeEndian.Uint16(b[6:]),
		csumOffset: binary.NativeEndian.Uint16(b[8:]),
	}
}

func (h vnetHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.NativeEndian.PutUint16(b[2:], h.hdrLen)
	binary.NativeEndian.PutUint16(b[4:], h.gsoSize)
	binary.NativeEndian.PutUint16(b[6:], h.csumStart)
	binary.NativeEndian.PutUint16(b[8:], h.csumOffset)
}

// onesSum adds the bytes of b, as big-endian 16-bit words (an odd last byte
// padded with a zero), to the one's-complement sum acc and returns the sum
// folded to 16 bits. The Internet checksum (RFC 1071) is its complement.
// Words are added 64 bits at a time in the machine's byte order, which RFC
// 1071 shows gives the same sum with its two bytes in that order. Two sums
// run side by side, each with its own carry, so that the processor adds
// them in parallel (on the test machine one carry chain summed 64 KiB at
// 14 GB/s, two at 24); the second is then added to the first with both
// carries.
func onesSum(b []byte, acc uint16) uint16 {
	var s, c, t, d uint64
	for len(b) >= 64 {
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[0:]), c)
		t, d = bits.Add64(t, binary.NativeEndian.Uint64(b[8:]), d)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[16:]), c)
		t, d = bits.Add64(t, binary.NativeEndian.Uint64(b[24:]), d)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[32:]), c)
		t, d = bits.Add64(t, binary.NativeEndian.Uint64(b[40:]), d)
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b[48:]), c)
		t, d = bits.Add64(t, binary.NativeEndian.Uint64(b[56:]), d)
		b = b[64:]
	}
	s, c = bits.Add64(s, t, c)
	s, c = bits.Add64(s, d, c)
	for len(b) >= 8 {
		s, c = bits.Add64(s, binary.NativeEndian.Uint64(b), c)
		b = b[8:]
	}
	if len(b) >= 4 {
		s, c = bits.Add64(s, uint64(binary.NativeEndian.Uint32(b)), c)
		b = b[4:]
	}
	if len(b) >= 2 {
		s, c = bits.Add64(s, uint64(binary.NativeEndian.Uint16(b)), c)
		b = b[2:]
	}
	if len(b) == 1 {
		s, c = bits.Add64(s, uint64(binary.NativeEndian.Uint16([]byte{b[0], 0})), c)
	}
	// The end-around carry: 2^64 is 1 in this arithmetic. Adding it
	// overflows only when s was all ones, and leaves 0, so 1 is right.
	s, c = bits.Add64(s, 0, c)
	s += c
	s = s>>32 + s&0xffffffff
	s = s>>32 + s&0xffffffff
	s = s>>16 + s&0xffff
	s = s>>16 + s&0xffff
	var w [2]byte
	binary.NativeEndian.PutUint16(w[:], uint16(s))
	sum := uint32(binary.BigEndian.Uint16(w[:])) + uint32(acc)
	return uint16(sum>>16 + sum&0xffff)
}

// pseudoSum is the one's-complement sum of the IPv4 pseudo header of the
// packet whose IPv4 header is ip, for a transport segment of length n.
func pseudoSum(ip []byte, proto uint8, n int) uint16 {
	return onesSum(ip[12:20], onesSum([]byte{0, proto, byte(n >> 8), byte(n)}, 0))
}

// finishChecksum computes the checksum a packet handed over with
// VIRTIO_NET_HDR_F_NEEDS_CSUM lacks: the device leaves the pseudo header's
// sum at start+offset, to which the bytes from start on are added. It
// reports false when the offsets lie outside the packet.
//
// A checksum that comes out as 0 is written as 0xffff, its other form in
// one's complement, as the kernel's skb_checksum_help does (CSUM_MANGLED_0)
// whatever the protocol: in UDP a 0 means the sender computed none (RFC
// 768), so about one datagram in 65536 would lose its check.
func finishChecksum(pkt []byte, start, offset uint16) bool {
	at := int(start) + int(offset)
	if int(start) > len(pkt) || at+2 > len(pkt) {
		return false
	}
	initial := binary.BigEndian.Uint16(pkt[at:])
	pkt[at], pkt[at+1] = 0, 0
	sum := ^onesSum(pkt[start:], initial)
	if sum == 0 {
		sum = 0xffff
	}
	binary.BigEndian.PutUint16(pkt[at:], sum)
	return true
}

// gsoPacket is a packet handed over for segmentation, checked by parseGSO:
// a TCP/IPv4 one (VIRTIO_NET_HDR_GSO_TCPV4) to cut into TCP segments, or a
// UDP/IPv4 one (VIRTIO_NET_HDR_GSO_UDP_L4, a socket's UDP_SEGMENT send) to
// cut into UDP datagrams.
type gsoPacket struct {
	udp            bool
	iphLen, hdrLen int // IPv4 header; IPv4 and TCP or UDP headers together
	mss            int // payload bytes per segment
	segments       int
}

// parseGSO checks a packet that the device hands over for segmentation with
// the header h: one IPv4 header, not a fragment, carrying TCP (for
// gsoTCPv4) or UDP (for gsoUDPL4), with a payload to cut at h.gsoSize into
// at most maxSegments segments. The header lengths are read from the
// packet; the virtio header's are hints.
func parseGSO(pkt []byte, h vnetHdr) (gsoPacket, bool) {
	if len(pkt) < ipv4MinHeader || pkt[0]>>4 != 4 {
		return gsoPacket{}, false
	}
	iphLen := int(pkt[0]&0x0f) * 4
	if iphLen < ipv4MinHeader || binary.BigEndian.Uint16(pkt[6:8])&^ipDF != 0 || len(pkt) < iphLen+udpHeaderLen {
		return gsoPacket{}, false
	}
	var l4Len int
	switch {
	case h.gsoType == gsoTCPv4 && pkt[9] == protoTCP && len(pkt) >= iphLen+tcpMinHeader:
		l4Len = int(pkt[iphLen+12]>>4) * 4
		if l4Len < tcpMinHeader {
			return gsoPacket{}, false
		}
	case h.gsoType == gsoUDPL4 && pkt[9] == protoUDP:
		l4Len = udpHeaderLen
	default:
		return gsoPacket{}, false
	}
	hdrLen := iphLen + l4Len
	mss := int(h.gsoSize)
	if hdrLen >= len(pkt) || mss == 0 {
		return gsoPacket{}, false
	}
	n := (len(pkt) - hdrLen + mss - 1) / mss
	if n > maxSegments {
		return gsoPacket{}, false
	}
	return gsoPacket{udp: pkt[9] == protoUDP, iphLen: iphLen, hdrLen: hdrLen, mss: mss, segments: n}, true
}

// segment writes into hdr the headers of segment i of the packet pkt
// (described by t) and returns its payload, the last one shorter if the
// payload does not divide evenly. The IPv4 header gets its length,
// identification and checksum, as the kernel's GSO gives each segment
// (identifications counting up from the packet's). A TCP header gets its
// sequence number, flags and checksum: FIN and PSH go on the last segment
// only, CWR on the first only (the sender reduced its window once, as the
// kernel's tcp_gso_segment keeps it; AccECN, which would keep it on all,
// is not among the device's offloads). A UDP header gets its length and
// checksum (never 0, which would say there is none: 0xffff instead, as
// finishChecksum writes).
func (t gsoPacket) segment(pkt []byte, i int, hdr []byte) []byte {
	start := t.hdrLen + i*t.mss
	payload := pkt[start:min(start+t.mss, len(pkt))]
	copy(hdr, pkt[:t.hdrLen])
	ip, l4 := hdr[:t.iphLen], hdr[t.iphLen:t.hdrLen]
	binary.BigEndian.PutUint16(ip[2:], uint16(t.hdrLen+len(payload)))
	binary.BigEndian.PutUint16(ip[4:], binary.BigEndian.Uint16(pkt[4:])+uint16(i))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip, 0))
	if t.udp {
		n := len(l4) + len(payload)
		binary.BigEndian.PutUint16(l4[4:], uint16(n))
		l4[udpCsumOffset], l4[udpCsumOffset+1] = 0, 0
		sum := ^onesSum(payload, onesSum(l4, pseudoSum(ip, protoUDP, n)))
		if sum == 0 {
			sum = 0xffff
		}
		binary.BigEndian.PutUint16(l4[udpCsumOffset:], sum)
		return payload
	}
	tcp := l4
	binary.BigEndian.PutUint32(tcp[4:], binary.BigEndian.Uint32(pkt[t.iphLen+4:])+uint32(i*t.mss))
	if i < t.segments-1 {
		tcp[13] &^= tcpFIN | tcpPSH
	}
	if i > 0 {
		tcp[13] &^= tcpCWR
	}
	tcp[tcpCsumOffset], tcp[tcpCsumOffset+1] = 0, 0
	sum := onesSum(payload, onesSum(tcp, pseudoSum(ip, protoTCP, len(tcp)+len(payload))))
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], ^sum)
	return payload
}

// coalescer builds one packet for the device out of consecutive TCP
// segments, or UDP datagrams, of one flow, received in order: the first
// (the head) whole, the others' payloads after it, written with one writev
// and a virtio header asking the kernel to treat it as a TSO or USO packet
// (as GRO would have). The kernel cuts a USO packet again into its
// datagrams for a socket without UDP_GRO, and hands it whole, with its
// segment size, to one with.
type coalescer struct {
	vnet  [vnetHdrLen]byte
	parts [][]byte // parts[0] is vnet; parts[1] the head; then payloads
	np    int
	// Of the head: UDP or TCP, header lengths, the payload length of each
	// segment (the last may be shorter, and closes the packet), the total
	// length so far and, for TCP, the next sequence number expected.
	udp            bool
	iphLen, hdrLen int
	mss, total     int
	next           uint32
	psh            bool
}

const (
	// maxParts bounds the segments of one coalesced packet; a 64 KiB
	// packet of 1400-byte segments has 47.
	maxParts = 2 + 64
	// maxUDPParts bounds those of a UDP one: Linux takes a USO packet of
	// at most 64 datagrams (UDP_MAX_SEGMENTS) from the device.
	maxUDPParts = 1 + 64
)

func newCoalescer() *coalescer {
	c := &coalescer{parts: make([][]byte, maxParts)}
	c.parts[0] = c.vnet[:]
	return c
}

// tcpCandidate returns the header lengths of pkt (one IPv4 packet cut to
// its Total Length, as accept returns it) if it is a TCP segment that may
// be coalesced with others: don't-fragment set and not a fragment, no
// options in the IPv4 header, ACK with at most PSH besides, and a payload.
// Its checksum is not looked at (see the design note).
func tcpCandidate(pkt []byte) (iphLen, hdrLen int, ok bool) {
	if pkt[0] != 0x45 || pkt[9] != protoTCP || binary.BigEndian.Uint16(pkt[6:8]) != ipDF || len(pkt) < 40 {
		return 0, 0, false
	}
	hdrLen = 20 + int(pkt[32]>>4)*4
	if hdrLen < 40 || hdrLen >= len(pkt) || pkt[33]&^tcpPSH != tcpACK {
		return 0, 0, false
	}
	return 20, hdrLen, true
}

// udpCandidate returns the header lengths of pkt (one IPv4 packet cut to
// its Total Length, as accept returns it) if it is a UDP datagram that may
// be coalesced with others: not a fragment, no options in the IPv4 header,
// a payload, a UDP length that is the packet's, and a checksum that is not
// 0 (none: the kernel's GRO does not mix those with checksummed ones; one
// that is there is not verified, see the design note). Unlike TCP,
// don't-fragment may be clear: Linux clears it on every datagram of a
// UDP_SEGMENT send unless the socket asks for it.
func udpCandidate(pkt []byte) (iphLen, hdrLen int, ok bool) {
	if pkt[0] != 0x45 || pkt[9] != protoUDP || binary.BigEndian.Uint16(pkt[6:8])&^ipDF != 0 || len(pkt) <= 28 ||
		int(binary.BigEndian.Uint16(pkt[24:26])) != len(pkt)-20 || pkt[26]|pkt[27] == 0 {
		return 0, 0, false
	}
	return 20, 28, true
}

// pending reports whether a packet is being built.
func (c *coalescer) pending() bool { return c.np > 0 }

// single makes pkt a packet of its own; c must be empty.
func (c *coalescer) single(pkt []byte) {
	c.parts[1] = pkt
	c.np = 2
}

// start makes pkt the head of a new packet, a TCP segment or (udp) a UDP
// datagram; c must be empty. It reports whether more may follow.
func (c *coalescer) start(pkt []byte, udp bool, iphLen, hdrLen int) bool {
	c.parts[1] = pkt
	c.np = 2
	c.udp = udp
	c.iphLen, c.hdrLen = iphLen, hdrLen
	c.mss = len(pkt) - hdrLen
	c.total = len(pkt)
	if udp {
		return true
	}
	c.next = binary.BigEndian.Uint32(pkt[iphLen+4:]) + uint32(c.mss)
	c.psh = pkt[iphLen+13]&tcpPSH != 0
	return !c.psh
}

// add appends pkt's payload if pkt continues the head's flow: same
// addresses, ports and IPv4 fields but length, identification and
// checksum; the same TCP header but sequence number, PSH and checksum; the
// next sequence number; a payload no longer than the head's. done reports
// that the packet is now complete (a shorter payload, or PSH). A UDP head
// takes addUDP's.
func (c *coalescer) add(pkt []byte) (added, done bool) {
	if c.udp {
		return c.addUDP(pkt)
	}
	head := c.parts[1]
	il, hl := c.iphLen, c.hdrLen
	if c.np == len(c.parts) || len(pkt) <= hl || len(pkt)-hl > c.mss || c.total+len(pkt)-hl > bigBuf ||
		string(pkt[:2]) != string(head[:2]) || string(pkt[6:10]) != string(head[6:10]) ||
		string(pkt[12:il+4]) != string(head[12:il+4]) ||
		binary.BigEndian.Uint32(pkt[il+4:]) != c.next ||
		string(pkt[il+8:il+13]) != string(head[il+8:il+13]) || pkt[il+13]&^tcpPSH != tcpACK ||
		string(pkt[il+14:il+16]) != string(head[il+14:il+16]) || string(pkt[il+18:hl]) != string(head[il+18:hl]) {
		return false, false
	}
	n := len(pkt) - hl
	c.parts[c.np] = pkt[hl:]
	c.np++
	c.total += n
	c.next += uint32(n)
	c.psh = pkt[il+13]&tcpPSH != 0
	return true, c.psh || n < c.mss
}

// addUDP appends pkt's payload if pkt continues the head's flow, as the
// kernel's UDP GRO takes it: same addresses and ports, the same IPv4 fields
// but length, identification and checksum; without don't-fragment, the
// head's identification counted up by the datagrams before pkt; a payload
// no longer than the head's; a UDP length that is the packet's, a checksum
// not 0; at most maxUDPParts datagrams. done reports that the packet is
// now complete (a shorter payload, or the most datagrams).
//
// Cutting the packet again numbers the identifications up from the head's,
// so a datagram that may be fragmented keeps its own only in sequence
// (Linux's UDP GRO, since 6.9, asks the same). With don't-fragment they
// are free, as for TCP (tcpCandidate): the datagram is never fragmented,
// so its identification means nothing (RFC 6864).
func (c *coalescer) addUDP(pkt []byte) (added, done bool) {
	head := c.parts[1]
	n := len(pkt) - 28
	if c.np == maxUDPParts || n <= 0 || n > c.mss || c.total+n > bigBuf ||
		string(pkt[:2]) != string(head[:2]) || string(pkt[6:10]) != string(head[6:10]) ||
		string(pkt[12:24]) != string(head[12:24]) ||
		head[6]&(ipDF>>8) == 0 && binary.BigEndian.Uint16(pkt[4:]) != binary.BigEndian.Uint16(head[4:])+uint16(c.np-1) {
		return false, false
	}
	if _, _, ok := udpCandidate(pkt); !ok {
		return false, false
	}
	c.parts[c.np] = pkt[28:]
	c.np++
	c.total += n
	return true, n < c.mss || c.np == maxUDPParts
}

// finish completes the packet and returns what to write: the virtio header
// and the parts. A lone head goes as it came, with an empty virtio header.
// The head of several is rewritten in place: total length and header
// checksum, PSH if the last had it, and in the TCP checksum field the
// pseudo header's sum, for the kernel to complete (NEEDS_CSUM); a UDP head
// gets the UDP length of the whole, and the pseudo header's sum for it.
func (c *coalescer) finish() [][]byte {
	parts := c.parts[:c.np]
	c.np = 0
	if len(parts) == 2 {
		clear(c.vnet[:])
		return parts
	}
	head := parts[1]
	ip, tcp := head[:c.iphLen], head[c.iphLen:c.hdrLen]
	binary.BigEndian.PutUint16(ip[2:], uint16(c.total))
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], ^onesSum(ip, 0))
	if c.udp {
		udp := tcp
		n := c.total - c.iphLen
		binary.BigEndian.PutUint16(udp[4:], uint16(n))
		binary.BigEndian.PutUint16(udp[udpCsumOffset:], pseudoSum(ip, protoUDP, n))
		vnetHdr{
			flags:      vnetNeedsCsum,
			gsoType:    gsoUDPL4,
			hdrLen:     uint16(c.hdrLen),
			gsoSize:    uint16(c.mss),
			csumStart:  uint16(c.iphLen),
			csumOffset: udpCsumOffset,
		}.encode(c.vnet[:])
		return parts
	}
	if c.psh {
		tcp[13] |= tcpPSH
	}
	binary.BigEndian.PutUint16(tcp[tcpCsumOffset:], pseudoSum(ip, protoTCP, c.total-c.iphLen))
	vnetHdr{
		flags:      vnetNeedsCsum,
		gsoType:    gsoTCPv4,
		hdrLen:     uint16(c.hdrLen),
		gsoSize:    uint16(c.mss),
		csumStart:  uint16(c.iphLen),
		csumOffset: tcpCsumOffset,
	}.encode(c.vnet[:])
	return parts
}
