package backend

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
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
	// the link holding it (or an alias such as "eth0:1").
	Local map[netip.Addr]string

	// PeerNets maps the peer network of each point-to-point IPv4 address
	// of this host (`ip addr add 198.19.9.1 peer 10.244.9.0/24 dev tun0`),
	// masked, to that address, but for those added with noprefixroute. The
	// kernel routes the network through the address's link (a route in the
	// cluster network, whose events wake the backends), and the address
	// lies outside it.
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
func ReadSegment(h *netlink.Handle, ifaceIndex int, iface string, routes []netlink.Route) (*Segment, error) {
	s := &Segment{Iface: iface, IfaceIndex: ifaceIndex}
	if err := s.readAddrs(h); err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Table != unix.RT_TABLE_MAIN || r.LinkIndex != ifaceIndex || r.Gw != nil || r.Via != nil || len(r.MultiPath) > 0 ||
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
	return s, nil
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
		s.Local[own.Addr()] = label
		if peer.Addr().Is4() && peer.Addr() != own.Addr() && flags&unix.IFA_F_NOPREFIXROUTE == 0 {
			if s.PeerNets == nil {
				s.PeerNets = map[netip.Prefix]netip.Addr{}
			}
			s.PeerNets[peer.Masked()] = own.Addr()
		}
		if link != s.IfaceIndex {
			return
		}
		s.Subnets = append(s.Subnets, own.Masked())
		// An address added with noprefixroute (NetworkManager adds
		// them all so, then the prefix route itself, perhaps in another
		// table) gives its subnet no route, and the kernel takes a
		// gateway only through a scope-link route: ReadSegment's routes
		// decide.
		if flags&unix.IFA_F_NOPREFIXROUTE == 0 {
			s.OnLink = append(s.OnLink, own.Masked())
		} else if s.gatewayOnLink == nil {
			s.gatewayOnLink = fibGatewayOnLink(h, s.IfaceIndex)
		}
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
