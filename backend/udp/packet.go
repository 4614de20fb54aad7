package udp

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"
)

// Inner IPv4 packets, as the TUN device hands them over and as peers send
// them: parsing, the router's TTL step, and the ICMP errors a router sends.
// Everything here works on byte slices in place and allocates nothing.

const (
	ipv4MinHeader = 20
	protoICMP     = 1

	icmpDestUnreachable = 3
	icmpNetUnreachable  = 0 // code of icmpDestUnreachable
	icmpSourceQuench    = 4
	icmpRedirect        = 5
	icmpTimeExceeded    = 11
	icmpTTLExceeded     = 0 // code of icmpTimeExceeded
	icmpParamProblem    = 12

	// icmpErrorMaxLen bounds the ICMP errors built here: IP header, ICMP
	// header, and as much of the offending packet as fits in 576 bytes
	// in all (RFC 1812 4.3.2.3; Linux's icmp_send quotes as much), not only
	// its header and 8 bytes (RFC 792's minimum): a sender can then match
	// the error to a packet by more than its first bytes (e.g. an
	// encapsulated or tunnelled packet's inner headers).
	icmpErrorMaxLen = 576
)

// verdict is what the datapath does with one packet; every value but pass is
// a reason to drop it, counted separately.
type verdict uint8

const (
	pass verdict = iota
	// dropNotIPv4: from the TUN device or a peer, a packet of another IP
	// version (the overlay is IPv4 only).
	dropNotIPv4
	// dropMalformed: not a well-formed IPv4 packet (short, bad header
	// length, total length past the end of what holds it or shorter than
	// the header).
	dropMalformed
	// dropBadChecksum: from a peer, an inner packet whose IPv4 header
	// checksum does not verify (the kernel's InCsumErrors).
	dropBadChecksum
	// dropNoRoute: from the TUN device, for an address in no peer's subnet;
	// an ICMP net-unreachable goes back into the TUN device.
	dropNoRoute
	// dropTTL: from the TUN device, TTL would reach 0; an ICMP time-exceeded
	// goes back.
	dropTTL
	// dropUnknownPeer: from the network, a datagram whose source address is
	// no peer's public IP.
	dropUnknownPeer
	// dropSpoofed: from a peer, an inner packet whose source lies outside
	// every subnet that peer holds (or is one's broadcast address) and is
	// not the peer's own address, or an ICMP error about a packet that was
	// not sent to that peer (quotesPacketTo).
	dropSpoofed
	// dropNotOurs: from a peer, an inner packet for an address outside our
	// own subnet (we are nobody's transit router) or for its broadcast
	// address (nor a forwarder of directed broadcasts).
	dropNotOurs
	// dropRefused: a packet that passed every check but that the kernel
	// would not take (sendmmsg refused its datagram, or the write into the
	// device failed), one per packet whatever the number of system calls;
	// the workers count it, the table never returns it.
	dropRefused
	numVerdicts
)

var verdictNames = [numVerdicts]string{
	pass:            "forwarded",
	dropNotIPv4:     "notIPv4",
	dropMalformed:   "malformed",
	dropBadChecksum: "badChecksum",
	dropNoRoute:     "noRoute",
	dropTTL:         "ttlExceeded",
	dropUnknownPeer: "unknownPeer",
	dropSpoofed:     "spoofedSource",
	dropNotOurs:     "notForUs",
	dropRefused:     "refused",
}

func (v verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return "verdict?"
}

// ipv4 is the part of an IPv4 header the datapath looks at. Addresses are
// big-endian uint32s, as they are compared with subnet masks.
type ipv4 struct {
	hlen     int
	ttl      uint8
	proto    uint8
	fragOff  uint16 // fragment offset in 8-byte units, flags removed
	src, dst uint32
	// tlen is the Total Length, set by parseIPv4 only.
	tlen int
}

// parseIPv4 checks that b starts with one whole IPv4 packet and returns its
// header. The packet is b[:h.tlen]: bytes after its Total Length are not
// part of it, and the caller cuts them off, as Linux's ip_rcv trims a
// packet to its Total Length (a link layer may pad a short frame). A Total
// Length past the end of b (the packet was cut short) or shorter than the
// header is malformed.
func parseIPv4(b []byte) (ipv4, verdict) {
	h, v := parseIPv4Header(b)
	if v != pass {
		return h, v
	}
	h.tlen = int(binary.BigEndian.Uint16(b[2:4]))
	if h.tlen > len(b) || h.tlen < h.hlen {
		return ipv4{}, dropMalformed
	}
	return h, pass
}

// parseIPv4Header checks that b starts with an IPv4 header and returns it;
// its total length is not looked at (a TSO packet's is not the one that
// counts).
func parseIPv4Header(b []byte) (ipv4, verdict) {
	if len(b) < 1 {
		return ipv4{}, dropMalformed
	}
	if b[0]>>4 != 4 {
		return ipv4{}, dropNotIPv4
	}
	if len(b) < ipv4MinHeader {
		return ipv4{}, dropMalformed
	}
	hlen := int(b[0]&0x0f) * 4
	if hlen < ipv4MinHeader || hlen > len(b) {
		return ipv4{}, dropMalformed
	}
	return ipv4{
		hlen:    hlen,
		ttl:     b[8],
		proto:   b[9],
		fragOff: binary.BigEndian.Uint16(b[6:8]) & 0x1fff,
		src:     binary.BigEndian.Uint32(b[12:16]),
		dst:     binary.BigEndian.Uint32(b[16:20]),
	}, pass
}

// decTTL decrements the TTL of the IPv4 header at the start of b and patches
// its checksum incrementally, exactly as the kernel's ip_decrease_ttl does
// (RFC 1624): the TTL is the high byte of a 16-bit word, so the word drops
// by 0x0100 and the one's-complement checksum rises by as much.
func decTTL(b []byte) {
	b[8]--
	check := uint32(binary.BigEndian.Uint16(b[10:12])) + 0x0100
	if check >= 0xffff {
		check++
	}
	binary.BigEndian.PutUint16(b[10:12], uint16(check))
}

// icmpQuery reports whether an ICMP message of type t is a query or a reply
// (echo, timestamp, information, address mask), about which an error may be
// sent; errors about ICMP errors are forbidden (RFC 1122 3.2.2), and an
// unknown type is treated as an error.
func icmpQuery(t uint8) bool {
	switch t {
	case 0, 8, 13, 14, 15, 16, 17, 18:
		return true
	}
	return false
}

// icmpErrorType reports whether an ICMP message of type t is an error that
// Linux hands to the socket of the packet it quotes (icmp_unreach,
// icmp_redirect); it discards those of the other types.
func icmpErrorType(t uint8) bool {
	switch t {
	case icmpDestUnreachable, icmpSourceQuench, icmpRedirect, icmpTimeExceeded, icmpParamProblem:
		return true
	}
	return false
}

// unicast reports whether a (big-endian) is an address a host can have: not
// 0.0.0.0/8, loopback, multicast, class E or broadcast.
func unicast(a uint32) bool {
	first := a >> 24
	return first != 0 && first != 127 && first < 224
}

// subnetBroadcast reports whether a (big-endian) is the broadcast address of
// a subnet of mask mask: its host part is all ones.
func subnetBroadcast(a, mask uint32) bool {
	host := ^mask
	return host != 0 && a&host == host
}

// icmpDue reports whether an ICMP error may be sent about the offending
// packet off (with header h; off ends at its Total Length): not about ICMP
// errors, non-first fragments, or packets whose source or destination is not
// a unicast address (RFC 1812 4.3.2.7). srcMask and dstMask are the masks of
// the subnets h's source and destination are taken to lie in
// (table.broadcastMasks): an address whose host part is all ones at its mask
// is a subnet's broadcast address. It is asked before the rate limit, so
// that a packet about which no error is due spends none of the budget.
func icmpDue(off []byte, h ipv4, srcMask, dstMask uint32) bool {
	if h.fragOff != 0 || !unicast(h.src) || !unicast(h.dst) ||
		subnetBroadcast(h.src, srcMask) || subnetBroadcast(h.dst, dstMask) {
		return false
	}
	return h.proto != protoICMP || (len(off) > h.hlen && icmpQuery(off[h.hlen]))
}

// icmpError writes into out the ICMP error of type typ and code about the
// offending packet off (with header h; off ends at its Total Length), sent
// from the address from with the identification id, and returns its
// length. It builds one whether or not one is due: icmpDue, asked first,
// says. out must hold icmpErrorMaxLen bytes.
//
// The error's IP header is as Linux's icmp_send makes its own: TTL 64,
// don't-fragment clear (so a link of a smaller MTU on the way fragments it
// rather than drops it), and therefore an identification that changes from
// one error to the next (RFC 791, RFC 6864 4.1: fragments of two datagrams
// with the same one could be reassembled into one); precedence internetwork
// control (TOS 0xc0, RFC 1812 4.3.2.5). Linux also carries over the
// offender's RFC 1349 TOS bits (tos & 0x1e), which RFC 2474 made part of
// the DSCP; 0xc0 alone is DSCP CS6, what RFC 1812 asks.
func icmpError(out []byte, from uint32, typ, code uint8, off []byte, h ipv4, id uint16) int {
	quoted := min(len(off), icmpErrorMaxLen-ipv4MinHeader-8)
	n := ipv4MinHeader + 8 + quoted
	out = out[:n]
	out[0], out[1] = 0x45, 0xc0
	binary.BigEndian.PutUint16(out[2:4], uint16(n))
	binary.BigEndian.PutUint16(out[4:6], id)
	clear(out[6:8])
	out[8], out[9] = 64, protoICMP
	clear(out[10:12])
	binary.BigEndian.PutUint32(out[12:16], from)
	binary.BigEndian.PutUint32(out[16:20], h.src)
	binary.BigEndian.PutUint16(out[10:12], ^onesSum(out[:ipv4MinHeader], 0))
	// ICMP header, 4 unused bytes, the quote.
	icmp := out[ipv4MinHeader:]
	icmp[0], icmp[1] = typ, code
	clear(icmp[2:8])
	copy(icmp[8:], off[:quoted])
	binary.BigEndian.PutUint16(icmp[2:4], ^onesSum(icmp, 0))
	return n
}

const (
	// icmpInterval and icmpBurst limit the ICMP errors the tx workers of
	// a backend together write into the device: one per icmpInterval on
	// average (1000 a second), up to icmpBurst at once, as the kernel's
	// icmp_msgs_per_sec and icmp_msgs_burst limit its own, for the whole
	// host however many CPUs send them. A flood of packets for a subnet
	// nobody holds (a scan, a routing loop) then costs the host no more
	// ICMP errors than that.
	icmpInterval = time.Second / 1000
	icmpBurst    = 50
)

// icmpLimiter is a token bucket whose tokens are time, shared by all the tx
// workers of a backend: credit grows with the time passed, up to icmpBurst
// intervals, and each error spends one interval. It is kept as one word,
// the instant at which the bucket is full again (GCRA's theoretical arrival
// time): the credit at now is icmpBurst intervals less how far that instant
// lies ahead, and an error moves it one interval on from the later of it
// and now. Workers take no lock, and one refused writes nothing, so a flood
// of refusals on several CPUs shares the word's cache line without
// bouncing it. Its zero value is full; it allocates nothing.
type icmpLimiter struct {
	// origin is the first reading allow was given; full counts from it,
	// so that readings stay monotonic ones.
	once   sync.Once
	origin time.Time
	full   atomic.Int64 // a time.Duration since origin
}

// allow reports whether an error may be sent at now (a monotonic reading)
// and if so spends its credit. A clock that went back earns nothing: the
// credit is counted from the latest reading any worker spent it at, so a
// worker whose reading lags another's by a little gets as much less.
func (l *icmpLimiter) allow(now time.Time) bool {
	l.once.Do(func() { l.origin = now })
	t := now.Sub(l.origin)
	for {
		full := time.Duration(l.full.Load())
		next := max(full, t) + icmpInterval
		if next-t > icmpBurst*icmpInterval {
			return false
		}
		if l.full.CompareAndSwap(int64(full), int64(next)) {
			return true
		}
	}
}
