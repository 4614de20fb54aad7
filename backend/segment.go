package backend

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Segment is what one Reconcile pass knows of the external interface's L2
// segment: which addresses are on-link, and which addresses are ours. It
// decides which peer addresses can be another host's at all (RefuseHost:
// every peer of every backend that programs the kernel per peer), and which
// can be a route's gateway directly, with no router in between (Refuse:
// every peer for host-gw, DirectRouting's peers for vxlan). It is read from
// the kernel at the start of each pass and then only read.
type Segment struct {
	Iface      string // the external interface's name, for messages
	IfaceIndex int

	// OnLink holds the subnets of the interface's addresses (but those
	// added with noprefixroute, which get no route), and the destinations
	// of its main-table scope-link routes without a gateway: a host with a
	// /32 address and "198.18.0.0/24 dev eth0 scope link" has its peers
	// on-link, and the kernel accepts them as gateways. A route with a
	// gateway makes nothing on-link. Sorted, no duplicates, masked.
	OnLink []netip.Prefix

	// Subnets are the subnets of the interface's own addresses (in OnLink
	// too unless noprefixroute), sorted, no duplicates, masked. The kernel
	// makes broadcast routes for them, so their network and broadcast
	// addresses cannot be a gateway; a scope-link route's destination has
	// no such addresses, and its first and last may be hosts like any
	// other.
	Subnets []netip.Prefix

	// Local maps every IPv4 address of this host to its label: the name of
	// the link holding it (or an alias such as "eth0:1"); the least label
	// of an address held more than once (on two links, with two prefix
	// lengths).
	Local map[netip.Addr]string

	// PeerNets maps the peer network of each point-to-point IPv4 address
	// of this host (`ip addr add 198.19.9.1 peer 10.244.9.0/24 dev tun0`),
	// masked, to that address, but for those added with noprefixroute. The
	// kernel routes the network through the address's link (a route in the
	// cluster network, whose events wake the backends), and the address
	// lies outside it. The lowest such address when several have one peer
	// network.
	PeerNets map[netip.Prefix]netip.Addr

	local []netip.Addr // Local's keys, sorted (LocalIn makes it)

	// gatewayOnLink, set when the interface has an address added with
	// noprefixroute, asks the kernel whether it would take a peer in that
	// address's subnet for a main-table route's gateway all the same: a
	// policy rule its check matches (by output interface, or for every
	// packet) may lead to the subnet's route in another table.
	gatewayOnLink func(netip.Addr) bool
}

// LocalIn says which address of this host the peer subnet sn (masked)
// holds, the lowest, or which point-to-point address has sn for its peer
// network, or "". Such a subnet is a network of this host that overlaps
// the cluster network (another interface's, a bridge left with an old
// subnet, a tunnel's peer network): a route to the peer's subnet would
// replace the kernel's route for that network when the two are equal, and
// deleting ours when the lease goes would leave that network with no route
// at all.
func (s *Segment) LocalIn(sn netip.Prefix) string {
	if len(s.local) != len(s.Local) {
		s.local = slices.SortedFunc(maps.Keys(s.Local), netip.Addr.Compare)
	}
	i, _ := slices.BinarySearchFunc(s.local, sn.Addr(), netip.Addr.Compare)
	if i < len(s.local) && sn.Contains(s.local[i]) {
		return fmt.Sprintf("subnet %s holds %s, an address of this host (%s)", sn, s.local[i], s.Local[s.local[i]])
	}
	if a, ok := s.PeerNets[sn]; ok {
		return fmt.Sprintf("subnet %s is the peer network of %s, a point-to-point address of this host (%s)", sn, a, s.Local[a])
	}
	return ""
}

// ReadSegment reads the segment of the external interface, the link with
// index ifaceIndex called iface, from the kernel's IPv4 addresses, which it
// lists, and routes, the main table's (MainRoutes, or PassRoutes with
// ifaceIndex): a backend lists those once per pass for all it reads from
// them. Only the main table counts: the kernel looks a main-table route's
// gateway up through the policy rules, but with no source address, so a
// rule by source (policy routing's usual "from <address> lookup N") sends
// it to the main table. A peer in the
// subnet of a noprefixroute address that no main-table route puts on-link
// is looked up as that check does (gatewayOnLink): a rule by output
// interface or for every packet may put it on-link through another table.
// A backend's pass reads it through a SegmentReader, which dumps the
// interface's addresses alone while it follows the others' events.
func ReadSegment(h *netlink.Handle, ifaceIndex int, iface string, routes []netlink.Route) (*Segment, error) {
	s := &Segment{Iface: iface, IfaceIndex: ifaceIndex}
	if err := s.readAddrs(h); err != nil {
		return nil, err
	}
	s.addRoutes(routes)
	return s, nil
}

// addRoutes adds the scope-link routes of routes to OnLink, and sorts OnLink
// and Subnets.
func (s *Segment) addRoutes(routes []netlink.Route) {
	for _, r := range routes {
		if r.Table != unix.RT_TABLE_MAIN || r.LinkIndex != s.IfaceIndex || r.Gw != nil || r.Via != nil || len(r.MultiPath) > 0 ||
			r.Scope != netlink.SCOPE_LINK || r.Type != unix.RTN_UNICAST {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a nil Dst is the default route
		if r.Dst != nil {
			var ok bool
			if dst, ok = PrefixFromIPNet(r.Dst); !ok || !dst.Addr().Is4() {
				continue
			}
		}
		s.OnLink = append(s.OnLink, dst.Masked())
	}
	// Stable, so that a reason logged for a peer stays the same from one
	// pass to the next (SkipLog logs changes only).
	slices.SortFunc(s.OnLink, netip.Prefix.Compare)
	s.OnLink = slices.Compact(s.OnLink)
	slices.SortFunc(s.Subnets, netip.Prefix.Compare)
	s.Subnets = slices.Compact(s.Subnets)
}

// readAddrs reads the host's IPv4 addresses into s: every one into Local
// (and PeerNets), the external interface's into Subnets and OnLink.
//
// They are read in place from the dump (eachAddr), not as netlink's
// AddrList returns them: a Kubernetes node's kube-proxy (IPVS mode) holds a
// /32 per Service on kube-ipvs0, 5 000 to 50 000, and AddrList's Addr for
// each cost a pass some 1 kB (TestPassIgnoresForeignAddrs).
func (s *Segment) readAddrs(h *netlink.Handle) error {
	add := func(link int, own, peer netip.Prefix, label string, flags uint32) {
		if !own.Addr().Is4() {
			return
		}
		// An address held twice (two links, two prefix lengths) keeps
		// the least label, and a peer network the lowest address, as
		// SegmentReader's hostAddrs keeps them.
		if old, ok := s.Local[own.Addr()]; !ok || label < old {
			s.Local[own.Addr()] = label
		}
		if pn, ok := peerNet(own, peer, flags); ok {
			if s.PeerNets == nil {
				s.PeerNets = map[netip.Prefix]netip.Addr{}
			}
			if old, ok := s.PeerNets[pn]; !ok || own.Addr().Less(old) {
				s.PeerNets[pn] = own.Addr()
			}
		}
		s.addIface(h, link, own, flags)
	}
	reset := func() {
		s.Local, s.PeerNets, s.Subnets, s.OnLink, s.gatewayOnLink = map[netip.Addr]string{}, nil, nil, nil, nil
	}
	sock, ok := handleSocket(h)
	if !ok {
		reset()
		addrs, err := ListAddrs(h, nil, netlink.FAMILY_V4)
		for _, a := range addrs {
			own, _ := PrefixFromIPNet(a.IPNet)
			peer, _ := PrefixFromIPNet(a.Peer)
			add(a.LinkIndex, own, peer, a.Label, uint32(a.Flags))
		}
		return err
	}
	labels := map[string]string{} // one string per link name, not per address
	_, err := Dump("addresses", func() ([]struct{}, error) {
		reset()
		return nil, eachAddr(sock, netlink.FAMILY_V4, 0, func(a *ifAddr) {
			label, ok := labels[string(a.label)]
			if !ok {
				label = string(a.label)
				labels[label] = label
			}
			own, peer := a.prefix()
			add(int(a.Index), own, peer, label, a.flags)
		})
	})
	return err
}

// addIface adds an IPv4 address of link, own (its prefix length the peer
// network's for a point-to-point address) with flags, to Subnets and OnLink
// when link is the external interface.
func (s *Segment) addIface(h *netlink.Handle, link int, own netip.Prefix, flags uint32) {
	if link != s.IfaceIndex || !own.Addr().Is4() {
		return
	}
	s.Subnets = append(s.Subnets, own.Masked())
	// An address added with noprefixroute (NetworkManager adds them all
	// so, then the prefix route itself, perhaps in another table) gives
	// its subnet no route, and the kernel takes a gateway only through a
	// scope-link route: ReadSegment's routes decide.
	if flags&unix.IFA_F_NOPREFIXROUTE == 0 {
		s.OnLink = append(s.OnLink, own.Masked())
	} else if s.gatewayOnLink == nil {
		s.gatewayOnLink = fibGatewayOnLink(h, s.IfaceIndex)
	}
}

// peerNet returns the peer network (masked) that an IPv4 address own with
// peer and flags gives PeerNets, if any.
func peerNet(own, peer netip.Prefix, flags uint32) (netip.Prefix, bool) {
	if !own.Addr().Is4() || !peer.Addr().Is4() || peer.Addr() == own.Addr() || flags&unix.IFA_F_NOPREFIXROUTE != 0 {
		return netip.Prefix{}, false
	}
	return peer.Masked(), true
}

// fibGatewayOnLink returns a gatewayOnLink that asks the kernel, through h,
// for the route it matches to an address as its check of a gateway looks it
// up (no source address, output interface ifaceIndex: `ip route get
// fibmatch <addr> oif <iface>`), and says whether that is a scope-link route
// without a gateway through the interface. Without fibmatch the kernel
// would make up an on-link answer where no route matches. Each address is
// asked once.
func fibGatewayOnLink(h *netlink.Handle, ifaceIndex int) func(netip.Addr) bool {
	seen := map[netip.Addr]bool{}
	return func(a netip.Addr) bool {
		if onLink, ok := seen[a]; ok {
			return onLink
		}
		rs, err := h.RouteGetWithOptions(IP(a), &netlink.RouteGetOptions{OifIndex: ifaceIndex, FIBMatch: true})
		onLink := err == nil && len(rs) == 1 && rs[0].LinkIndex == ifaceIndex && rs[0].Gw == nil && rs[0].Via == nil &&
			len(rs[0].MultiPath) == 0 && rs[0].Scope == netlink.SCOPE_LINK && rs[0].Type == unix.RTN_UNICAST
		seen[a] = onLink
		return onLink
	}
}

// SegmentRouteEvent returns an EventFilter.Route func that accepts events
// about the routes ReadSegment reads as on-link: the main table's unicast
// scope-link routes without a gateway on the link with index ifaceIndex.
// Such routes of other tables (policy routing's, the local table's
// broadcast routes) decide nothing, and each wake costs a pass.
func SegmentRouteEvent(ifaceIndex int) func(netlink.RouteUpdate) bool {
	return func(u netlink.RouteUpdate) bool {
		return u.LinkIndex == ifaceIndex && u.Gw == nil && u.Scope == netlink.SCOPE_LINK &&
			u.Table == unix.RT_TABLE_MAIN && u.Route.Type == unix.RTN_UNICAST // u.Type is the message's
	}
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// Refuse says why the peer address pub cannot be the gateway of a route on
// the segment, or returns "" if it can: RefuseHost's reasons, and that pub
// is not on-link (offLink true). Some of these routes the kernel refuses
// (the broadcast address of one of our subnets: EINVAL, on every pass);
// others it accepts and they are wrong (a route via one of our own
// addresses).
func (s *Segment) Refuse(pub netip.Addr) (why string, offLink bool) {
	if why := s.RefuseHost(pub); why != "" {
		return why, false
	}
	if !Contains(s.OnLink, pub) {
		why := fmt.Sprintf("public IP %s is not on-link: %s is attached to %v only", pub, s.Iface, s.OnLink)
		if len(s.OnLink) == 0 {
			// "attached to [] only" read as a fault of the message.
			why = fmt.Sprintf("public IP %s is not on-link: %s has no on-link network", pub, s.Iface)
		}
		for _, p := range s.Subnets {
			if p.Contains(pub) {
				// Only an address added with noprefixroute is in Subnets
				// and not in OnLink.
				if s.gatewayOnLink != nil && s.gatewayOnLink(pub) {
					return "", false
				}
				why += fmt.Sprintf(" (its address in %s was added with noprefixroute, and no scope-link route of the main table leads there)", p)
				break
			}
		}
		return why, true
	}
	return "", false
}

// RefuseHost says why the peer address pub cannot be another host's
// address, wherever that host is, or returns "": unspecified or elsewhere in
// 0.0.0.0/8, loopback, multicast, the limited broadcast address, an address
// of this host, or the network or broadcast address of the external
// interface's subnets. Packets sent there (routed, or VXLAN encapsulated)
// go nowhere, to every host of the segment, or back to this one. Class E
// (240.0.0.0/4) and link-local addresses can be hosts': Linux routes them
// like any other, and some clouds number hosts in 240.0.0.0/4.
func (s *Segment) RefuseHost(pub netip.Addr) string {
	switch {
	case pub.IsUnspecified():
		return fmt.Sprintf("public IP %s is unspecified", pub)
	case pub.Is4() && pub.As4()[0] == 0:
		// RFC 1122: "this host on this network", a source only.
		return fmt.Sprintf("public IP %s lies in 0.0.0.0/8, \"this network\", a source address only", pub)
	case pub.IsLoopback():
		return fmt.Sprintf("public IP %s is a loopback address", pub)
	case pub.IsMulticast():
		return fmt.Sprintf("public IP %s is a multicast address", pub)
	case pub == limitedBroadcast:
		return fmt.Sprintf("public IP %s is the limited broadcast address", pub)
	}
	if label, ok := s.Local[pub]; ok {
		return fmt.Sprintf("public IP %s is an address of this host (%s)", pub, label)
	}
	for _, p := range s.Subnets {
		// /31 and /32 have no network or broadcast address (RFC 3021).
		if p.Bits() > 30 || !p.Contains(pub) {
			continue
		}
		switch pub {
		case p.Addr():
			return fmt.Sprintf("public IP %s is the network address of %s", pub, p)
		case broadcast(p):
			return fmt.Sprintf("public IP %s is the broadcast address of %s", pub, p)
		}
	}
	return ""
}

// broadcast returns the last address of the IPv4 prefix p.
func broadcast(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	host := ^uint32(0) >> p.Bits()
	for i := range a {
		a[i] |= byte(host >> (8 * (3 - i)))
	}
	return netip.AddrFrom4(a)
}

// SegmentReader reads each pass's Segment as ReadSegment does, but keeps the
// host's IPv4 addresses (Local, PeerNets) between passes, up to date from
// the kernel's address events, while it is subscribed to them (Subscribe):
// a pass then dumps the external interface's addresses alone. A Kubernetes
// node's kube-proxy (IPVS mode) holds a /32 per Service on kube-ipvs0, 5 000
// to 50 000, and ReadSegment's dump of them all cost each pass 0.5–2 µs per
// address (BenchmarkSegmentReader); kept, they cost some 250 bytes each.
//
// It dumps every address again when the kernel says it dropped events (the
// socket's buffer was full: ENOBUFS), when the socket fails, and at least
// every redumpAfter. Events are read at the start of each Read, so the
// socket's buffer holds those of one interval between passes. Read and
// Subscribe may be called from different goroutines (Reconcile's and
// Watch's); the zero value is ready and, until subscribed, reads as
// ReadSegment.
type SegmentReader struct {
	mu     sync.Mutex
	sock   *nl.NetlinkSocket // nil while not subscribed
	addrs  *hostAddrs        // nil: dump at the next Read
	dumped time.Time         // when addrs was dumped
	buf    []byte

	holdMu sync.Mutex // guards held; taken before mu
	held   *segHold   // Hold's subscription; nil while there is none
}

// segHold is a subscription taken by Hold, ended by end.
type segHold struct{ end func() }

// Hold subscribes r as Subscribe does unless Hold has already, and returns
// the func that ends that subscription, whichever call took it; the next
// call after its end subscribes anew. A backend's Prepare holds it until
// its ctx is done, so that the passes before Watch (the agent runs the
// first ones and Watch's start side by side), or of a backend whose Watch
// never runs, take the host's addresses from their events too, rather
// than dump them all each (some 200 ms a pass with 50 000 kube-proxy
// Service addresses); Watch goes on with it and ends it at its own end.
func (r *SegmentReader) Hold(ns netns.NsHandle) (end func()) {
	r.holdMu.Lock()
	defer r.holdMu.Unlock()
	if r.held == nil {
		h := &segHold{}
		unsubscribe := r.Subscribe(ns)
		h.end = sync.OnceFunc(func() {
			r.holdMu.Lock()
			defer r.holdMu.Unlock()
			if r.held == h {
				r.held = nil
			}
			unsubscribe()
		})
		r.held = h
	}
	return r.held.end
}

// redumpAfter bounds how long SegmentReader trusts its events alone.
const redumpAfter = 5 * time.Minute

// addrEventBuffer is the receive buffer SegmentReader's socket asks for,
// which the kernel doubles: some 5000 events (it charges each about 800
// bytes) between two passes before it drops them, and Read dumps. Memory
// is charged only while events wait.
const addrEventBuffer = 2 << 20

// Subscribe subscribes r to the IPv4 address events of namespace ns
// (netns.None() for the current one), that of the handle Read is given, and
// returns the func that ends the subscription. Until it ends, Read keeps
// the addresses from the events. When the subscription cannot be made, Read
// dumps them all, as ReadSegment.
func (r *SegmentReader) Subscribe(ns netns.NsHandle) (unsubscribe func()) {
	sock, err := nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, unix.RTNLGRP_IPV4_IFADDR)
	if err != nil {
		return func() {}
	}
	if sock.SetReceiveBufferSize(addrEventBuffer, true) != nil {
		// Without CAP_NET_ADMIN: capped at net.core.rmem_max, and a
		// full buffer costs a dump.
		_ = sock.SetReceiveBufferSize(addrEventBuffer, false)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	// Events before this subscription are lost to it: dump first.
	r.sock, r.addrs = sock, nil
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.sock == sock {
			r.sock, r.addrs = nil, nil
		}
		sock.Close()
	}
}

// Read reads the segment of the external interface, the link with index
// ifaceIndex called iface, as ReadSegment does. While r is subscribed, it
// takes the host's addresses from the events since its last Read and dumps
// the interface's addresses alone.
//
// The Segment's Local and PeerNets are r's own until the next Read: a pass
// reads them and keeps nothing.
func (r *SegmentReader) Read(h *netlink.Handle, ifaceIndex int, iface string, routes []netlink.Route) (*Segment, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	sock, ok := handleSocket(h)
	if r.sock == nil || !ok {
		r.addrs = nil
		return ReadSegment(h, ifaceIndex, iface, routes)
	}
	if lost := !r.drain(); lost || r.addrs == nil || time.Since(r.dumped) >= redumpAfter {
		// Events queued from here on are read at the next Read: those
		// about addresses the dump sees again change nothing, as each
		// says how its address stands after it.
		a, err := dumpHostAddrs(sock)
		switch {
		case err == nil:
			r.addrs, r.dumped = a, time.Now()
		case lost || r.addrs == nil:
			r.addrs = nil
			return nil, err
		}
		// Else the periodic dump failed (interrupted by changes, again
		// and again), and the events kept r.addrs: dump at the next Read.
	}
	s := &Segment{Iface: iface, IfaceIndex: ifaceIndex, Local: r.addrs.local, PeerNets: r.addrs.peerNets, local: r.addrs.sorted}
	_, err := Dump("addresses", func() ([]struct{}, error) {
		s.Subnets, s.OnLink, s.gatewayOnLink = nil, nil, nil
		return nil, eachAddr(sock, netlink.FAMILY_V4, ifaceIndex, func(a *ifAddr) {
			own, _ := a.prefix()
			s.addIface(h, int(a.Index), own, a.flags)
		})
	})
	if err != nil {
		return nil, err
	}
	s.addRoutes(routes)
	return s, nil
}

// drain applies the address events queued on r's socket to r.addrs (when not
// nil). It returns false when some were lost: the kernel dropped them
// (ENOBUFS) or the socket failed.
func (r *SegmentReader) drain() bool {
	if r.buf == nil {
		r.buf = make([]byte, 64<<10)
	}
	fd, ok := r.sock.GetFd(), true
	var a ifAddr
	for {
		n, from, err := unix.Recvfrom(fd, r.buf, unix.MSG_DONTWAIT)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return ok
		case errors.Is(err, unix.ENOBUFS):
			ok = false
			continue
		case err != nil:
			return false
		}
		if sa, isNL := from.(*unix.SockaddrNetlink); !isNL || sa.Pid != 0 || r.addrs == nil {
			continue // not the kernel's, or nothing to apply them to
		}
		for msgs := r.buf[:n]; len(msgs) >= unix.NLMSG_HDRLEN; {
			hdr := *(*unix.NlMsghdr)(unsafe.Pointer(&msgs[0]))
			if int(hdr.Len) < unix.NLMSG_HDRLEN || int(hdr.Len) > len(msgs) {
				ok = false // not as the kernel writes them: trust a dump
				break
			}
			data := msgs[unix.NLMSG_HDRLEN:hdr.Len]
			msgs = msgs[min(len(msgs), (int(hdr.Len)+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1)):]
			if hdr.Type != unix.RTM_NEWADDR && hdr.Type != unix.RTM_DELADDR {
				continue
			}
			if parseIfAddr(data, &a) != nil {
				ok = false
				continue
			}
			if a.Family != unix.AF_INET {
				continue
			}
			own, peer := a.prefix()
			if hdr.Type == unix.RTM_NEWADDR {
				r.addrs.set(int32(a.Index), own, peer, string(a.label), a.flags)
			} else {
				r.addrs.del(int32(a.Index), own, peer)
			}
		}
	}
}

// hostAddrs is the host's IPv4 addresses as SegmentReader keeps them: each
// as the kernel tells one from another (link, address, prefix length, peer
// network), and from those a Segment's Local, its keys sorted, and
// PeerNets. An address held more than once has the least label in local,
// and a peer network the lowest address in peerNets, as ReadSegment keeps
// them.
type hostAddrs struct {
	held     map[netip.Addr][]heldAddr
	local    map[netip.Addr]string
	sorted   []netip.Addr                  // local's keys; nil while dumped (dumpHostAddrs sorts)
	peers    map[netip.Prefix][]netip.Addr // the addresses with each peer network
	peerNets map[netip.Prefix]netip.Addr   // nil when empty, as ReadSegment's
	labels   map[string]string             // one string per label
}

// heldAddr is one holder of an address: which link, with which prefix
// length and peer network (the key), its label, and whether its peer
// network is in PeerNets (peerNet).
type heldAddr struct {
	link    int32
	bits    uint8
	peerNet bool
	peer    netip.Prefix // masked; zero but for a point-to-point address
	label   string
}

// peerNetOf returns n's peer network if it is in PeerNets, else zero.
func (n heldAddr) peerNetOf() netip.Prefix {
	if !n.peerNet {
		return netip.Prefix{}
	}
	return n.peer
}

// dumpHostAddrs dumps every IPv4 address of the host through s.
func dumpHostAddrs(s *nl.SocketHandle) (*hostAddrs, error) {
	var h *hostAddrs
	_, err := Dump("addresses", func() ([]struct{}, error) {
		h = &hostAddrs{held: map[netip.Addr][]heldAddr{}, local: map[netip.Addr]string{},
			peers: map[netip.Prefix][]netip.Addr{}, labels: map[string]string{}}
		return nil, eachAddr(s, netlink.FAMILY_V4, 0, func(a *ifAddr) {
			own, peer := a.prefix()
			h.set(int32(a.Index), own, peer, string(a.label), a.flags)
		})
	})
	if err != nil {
		return nil, err
	}
	h.sorted = slices.AppendSeq(make([]netip.Addr, 0, len(h.local)), maps.Keys(h.local)) // not nil: kept from now on
	slices.SortFunc(h.sorted, netip.Addr.Compare)
	return h, nil
}

// set adds an address, or changes the one held under the same key.
func (h *hostAddrs) set(link int32, own, peer netip.Prefix, label string, flags uint32) {
	if !own.Addr().Is4() {
		return
	}
	if l, ok := h.labels[label]; ok {
		label = l
	} else {
		h.labels[label] = label
	}
	pn, isPeerNet := peerNet(own, peer, flags)
	n := heldAddr{link: link, bits: uint8(own.Bits()), peerNet: isPeerNet, peer: peer.Masked(), label: label}
	a := own.Addr()
	hs := h.held[a]
	i := slices.IndexFunc(hs, n.same)
	if i >= 0 {
		h.dropPeerNet(a, hs[i].peerNetOf())
		hs[i] = n
	} else {
		hs = append(hs, n)
		h.held[a] = hs
	}
	if isPeerNet {
		h.peers[pn] = append(h.peers[pn], a)
		h.pickPeerNet(pn)
	}
	h.pickLabel(a, hs)
}

// del drops the address held under the key of link, own and peer.
func (h *hostAddrs) del(link int32, own, peer netip.Prefix) {
	a := own.Addr()
	hs := h.held[a]
	i := slices.IndexFunc(hs, heldAddr{link: link, bits: uint8(own.Bits()), peer: peer.Masked()}.same)
	if i < 0 {
		return
	}
	h.dropPeerNet(a, hs[i].peerNetOf())
	hs = slices.Delete(hs, i, i+1)
	if len(hs) > 0 {
		h.held[a] = hs
		h.pickLabel(a, hs)
		return
	}
	delete(h.held, a)
	delete(h.local, a)
	if h.sorted != nil {
		if j, found := slices.BinarySearchFunc(h.sorted, a, netip.Addr.Compare); found {
			h.sorted = slices.Delete(h.sorted, j, j+1)
		}
	}
}

// same reports whether n and m are held under one key.
func (n heldAddr) same(m heldAddr) bool {
	return n.link == m.link && n.bits == m.bits && n.peer == m.peer
}

// pickLabel sets local[a] to the least label of hs, a's holders.
func (h *hostAddrs) pickLabel(a netip.Addr, hs []heldAddr) {
	label := hs[0].label
	for _, n := range hs[1:] {
		label = min(label, n.label)
	}
	if _, ok := h.local[a]; !ok && h.sorted != nil {
		j, _ := slices.BinarySearchFunc(h.sorted, a, netip.Addr.Compare)
		h.sorted = slices.Insert(h.sorted, j, a)
	}
	h.local[a] = label
}

// dropPeerNet drops a from the addresses with peer network pn (if valid).
func (h *hostAddrs) dropPeerNet(a netip.Addr, pn netip.Prefix) {
	if !pn.IsValid() {
		return
	}
	as := h.peers[pn]
	if i := slices.Index(as, a); i >= 0 {
		as = slices.Delete(as, i, i+1)
	}
	if len(as) == 0 {
		delete(h.peers, pn)
	} else {
		h.peers[pn] = as
	}
	h.pickPeerNet(pn)
}

// pickPeerNet sets peerNets[pn] to the lowest address with peer network pn.
func (h *hostAddrs) pickPeerNet(pn netip.Prefix) {
	as := h.peers[pn]
	if len(as) == 0 {
		delete(h.peerNets, pn)
		if len(h.peerNets) == 0 {
			h.peerNets = nil
		}
		return
	}
	if h.peerNets == nil {
		h.peerNets = map[netip.Prefix]netip.Addr{}
	}
	h.peerNets[pn] = slices.MinFunc(as, netip.Addr.Compare)
}
