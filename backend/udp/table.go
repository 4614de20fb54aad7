package udp

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// entry is one row of the forwarding table: packets for Subnet are sent to
// Dst. It is comparable, so tables are diffed with backend.Diff like kernel
// objects.
type entry struct {
	Subnet netip.Prefix
	Dst    netip.AddrPort
}

func (e entry) key() netip.Prefix { return e.Subnet }

func (e entry) String() string { return fmt.Sprintf("forward %s to %s", e.Subnet, e.Dst) }

// peer is an entry as the datapath uses it.
type peer struct {
	entry
	sa   unix.RawSockaddrInet4 // Dst, ready for sendmmsg
	mask uint32                // Subnet's
}

// subnet4 is an IPv4 prefix as big-endian address and mask.
type subnet4 struct{ net, mask uint32 }

func toSubnet4(p netip.Prefix) subnet4 {
	a := p.Masked().Addr().As4()
	mask := ^uint32(0) << (32 - p.Bits())
	if p.Bits() == 0 {
		mask = 0
	}
	return subnet4{binary.BigEndian.Uint32(a[:]), mask}
}

func (s subnet4) contains(a uint32) bool { return a&s.mask == s.net }

// table is the immutable forwarding state the workers read: built whole by
// Reconcile from the peer set and swapped in atomically, never changed in
// place.
//
// Lookups cost one map access per distinct prefix length among the peers'
// subnets (one in any cluster built from a single network config), not one
// per peer.
type table struct {
	// own is our lease's subnet.
	own subnet4
	// from is the source of the ICMP errors the datapath writes into the
	// TUN device: the device's own address, <own subnet>.0.
	from uint32
	// byLen indexes the peers by subnet, one map per prefix length,
	// longest first so the most specific subnet wins.
	byLen []lenIndex
	// bySource maps a peer's public IP to the subnets it holds (usually
	// one): with that address itself, the only inner sources accepted
	// from it.
	bySource map[uint32][]subnet4
	entries  []entry // sorted by subnet
}

type lenIndex struct {
	mask  uint32
	peers map[uint32]*peer
}

// newTable builds the table for our own subnet and the entries, which must
// have IPv4 subnets and destinations, one entry per subnet.
func newTable(own netip.Prefix, entries []entry) *table {
	t := &table{
		own:      toSubnet4(own),
		bySource: make(map[uint32][]subnet4, len(entries)),
		entries:  slices.SortedFunc(slices.Values(entries), func(a, b entry) int { return a.Subnet.Addr().Compare(b.Subnet.Addr()) }),
	}
	t.from = t.own.net
	byBits := map[int]map[uint32]*peer{}
	for _, e := range t.entries {
		sn := toSubnet4(e.Subnet)
		m := byBits[e.Subnet.Bits()]
		if m == nil {
			m = map[uint32]*peer{}
			byBits[e.Subnet.Bits()] = m
		}
		p := &peer{entry: e, mask: sn.mask}
		p.sa.Family = unix.AF_INET
		p.sa.Addr = e.Dst.Addr().As4()
		// sin_port is in network byte order whatever the host's is.
		port := (*[2]byte)(unsafe.Pointer(&p.sa.Port))
		binary.BigEndian.PutUint16(port[:], e.Dst.Port())
		m[sn.net] = p
		src := binary.BigEndian.Uint32(p.sa.Addr[:])
		t.bySource[src] = append(t.bySource[src], sn)
	}
	for bits, m := range byBits {
		t.byLen = append(t.byLen, lenIndex{mask: toSubnet4(netip.PrefixFrom(netip.IPv4Unspecified(), bits)).mask, peers: m})
	}
	slices.SortFunc(t.byLen, func(a, b lenIndex) int { return cmp.Compare(b.mask, a.mask) })
	return t
}

// lookup returns the peer whose subnet holds dst, or nil.
func (t *table) lookup(dst uint32) *peer {
	for i := range t.byLen {
		if p := t.byLen[i].peers[dst&t.byLen[i].mask]; p != nil {
			return p
		}
	}
	return nil
}

// broadcastMasks returns the masks at which icmpError takes h's source and
// destination for a subnet's broadcast address (host part all ones): that of
// the subnet holding the address, ours or a peer's, as leases of several
// lengths live side by side once the operator changed SubnetLen
// (subnet.Manager keeps the older ones). A destination in no known subnet
// is taken at our length, the likeliest for a lease; a source in none, 0:
// it may be anything, a node's own address on an underlay the cluster
// knows nothing of, and only 255.255.255.255 is surely a broadcast address.
func (t *table) broadcastMasks(h ipv4) (src, dst uint32) {
	return t.maskOf(h.src, 0), t.maskOf(h.dst, t.own.mask)
}

// maskOf returns the mask of the subnet, ours or a peer's, that holds a, or
// none if no subnet does.
func (t *table) maskOf(a, none uint32) uint32 {
	if t.own.contains(a) {
		return t.own.mask
	}
	if p := t.lookup(a); p != nil {
		return p.mask
	}
	return none
}

// routeHeader decides the fate of the packet b read from the TUN device,
// whose header h is parsed already: the peer to send it to (pass), or why
// not. It decrements the TTL of a packet it passes.
func (t *table) routeHeader(b []byte, h ipv4) (*peer, ipv4, verdict) {
	p := t.lookup(h.dst)
	if p == nil || t.own.contains(h.dst) {
		return nil, h, dropNoRoute
	}
	if h.ttl <= 1 {
		return nil, h, dropTTL
	}
	decTTL(b)
	return p, h, pass
}

// accept decides whether the packet at the start of b, received in a
// datagram from the address src (big-endian), may enter our host: src must
// be a peer's public IP, the packet's header checksum must verify, the
// inner source lie inside a subnet that peer holds, other than at its
// broadcast address (a martian, RFC 1812 5.3.7), or be src itself, and
// the inner destination inside our own subnet, other than at its broadcast
// address; an ICMP error must be about a packet sent to that peer
// (quotesPacketTo). It returns the packet, b cut to its Total Length
// (parseIPv4).
//
// The header checksum is checked here because nothing after us would: a
// packet written into the device alone would be dropped by the kernel, but
// coalescing (offload.go) discards the headers of all segments but the
// first and rewrites that one's checksum.
//
// The inner source src is the peer's node: its host answering one of our
// pods that reached it over the underlay (unmasqueraded) sends the answer
// from its own address, along the network's route into its flannel0.
// Accepting it trusts the peer with no address but its own, which the
// outer header already claims.
//
// A destination at our subnet's broadcast address is a directed broadcast,
// which a router does not forward (RFC 2644) and we do not deliver: Linux
// would take it, written into the device, for the host itself (as over
// vxlan or host-gw) and hand it to every wildcard socket of the host, but
// to no pod (bc_forwarding is off), so only the host's services would see
// a broadcast from another host's pod. Our subnet's first address is our
// flannel0 address, a host's like any other, and is delivered.
func (t *table) accept(src uint32, b []byte) ([]byte, verdict) {
	subnets, ok := t.bySource[src]
	if !ok {
		return nil, dropUnknownPeer
	}
	h, v := parseIPv4(b)
	if v != pass {
		return nil, v
	}
	if onesSum(b[:h.hlen], 0) != 0xffff {
		return nil, dropBadChecksum
	}
	inside := h.src == src
	for _, s := range subnets {
		inside = inside || s.contains(h.src) && !subnetBroadcast(h.src, s.mask)
	}
	if !inside {
		return nil, dropSpoofed
	}
	if !t.own.contains(h.dst) || subnetBroadcast(h.dst, t.own.mask) {
		return nil, dropNotOurs
	}
	if h.proto == protoICMP && !quotesPacketTo(b[h.hlen:h.tlen], h.fragOff, src, subnets) {
		return nil, dropSpoofed
	}
	return b[:h.tlen], pass
}

// quotesPacketTo reports whether icmp, the ICMP message of a packet
// received from the peer with public IP src and subnets, may come from
// that peer: unless it is an error (destination unreachable, source
// quench, redirect, time exceeded, parameter problem), which speaks about
// a packet of ours, yes; an error, only if the packet it quotes was sent
// to the peer, to a subnet it holds or to src itself, as an error from
// the peer's pods, its kernel or its datapath is. The inner source check
// trusts the peer with its own addresses only; an error about our packet
// to another host (another peer's pod, a pod of ours, an address outside
// the cluster) would let it speak for that host, which is not on the
// peer's path: a destination-unreachable fails our pods' connected UDP
// sockets toward it, and "fragmentation needed" shrinks their path MTU to
// it (to 552 bytes, for 10 minutes). An error whose quote is too short to
// hold the quoted packet's destination, as in a first fragment that puts
// the quote in the next one, is refused: the kernel drops one so short
// anyway (icmp_unreach), and its later fragments alone are never
// reassembled. A later fragment (fragOff != 0) carries no ICMP header to
// judge.
func quotesPacketTo(icmp []byte, fragOff uint16, src uint32, subnets []subnet4) bool {
	if fragOff != 0 || len(icmp) == 0 || !icmpErrorType(icmp[0]) {
		return true
	}
	const quoteDst = 8 + 16 // ICMP header, then the quoted header's destination
	if len(icmp) < quoteDst+4 {
		return false
	}
	dst := binary.BigEndian.Uint32(icmp[quoteDst:])
	ok := dst == src
	for _, s := range subnets {
		ok = ok || s.contains(dst)
	}
	return ok
}
