package hostgw

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// segment is what one Reconcile pass knows of the external interface's L2
// segment: which addresses are on-link, and which addresses are ours. It is
// read from the kernel at the start of each pass and then only read.
type segment struct {
	iface      string // the external interface's name, for messages
	ifaceIndex int

	// onLink holds the subnets of the interface's addresses, and the
	// destinations of its main-table scope-link routes without a gateway: a
	// host with a /32 address and "198.18.0.0/24 dev eth0 scope link" has
	// its peers on-link, and the kernel accepts them as gateways. A route
	// with a gateway makes nothing on-link. Sorted, no duplicates, masked.
	onLink []netip.Prefix

	// local maps every IPv4 address of this host to the index of the link
	// holding it.
	local map[netip.Addr]int
}

// readSegment reads the segment of the external interface, the link with
// index ifaceIndex called iface.
func readSegment(h *netlink.Handle, ifaceIndex int, iface string) (*segment, error) {
	s := &segment{iface: iface, ifaceIndex: ifaceIndex, local: map[netip.Addr]int{}}
	addrs, err := backend.ListAddrs(h, nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		p, ok := backend.PrefixFromIPNet(a.IPNet)
		if !ok || !p.Addr().Is4() {
			continue
		}
		s.local[p.Addr()] = a.LinkIndex
		if a.LinkIndex == ifaceIndex {
			s.onLink = append(s.onLink, p.Masked())
		}
	}
	// The main table's only (ListRoutes' default), as the kernel's check of a
	// main-table route's gateway sees it without policy rules.
	routes, err := backend.ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{LinkIndex: ifaceIndex}, netlink.RT_FILTER_OIF)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.LinkIndex != ifaceIndex || r.Gw != nil || r.Via != nil || len(r.MultiPath) > 0 ||
			r.Scope != netlink.SCOPE_LINK || r.Type != unix.RTN_UNICAST {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a nil Dst is the default route
		if r.Dst != nil {
			var ok bool
			if dst, ok = backend.PrefixFromIPNet(r.Dst); !ok || !dst.Addr().Is4() {
				continue
			}
		}
		s.onLink = append(s.onLink, dst.Masked())
	}
	// Stable, so that the reason logged for an off-link peer stays the same
	// from one pass to the next (backend.SkipLog logs changes only).
	slices.SortFunc(s.onLink, netip.Prefix.Compare)
	s.onLink = slices.Compact(s.onLink)
	return s, nil
}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// refuse says why pub cannot be the gateway of a route to a peer's subnet,
// or returns "" if it can. Some of these routes the kernel refuses (the
// broadcast address of one of our subnets: EINVAL, on every pass); others
// it accepts and they are wrong (a route via one of our own addresses).
func (s *segment) refuse(pub netip.Addr) string {
	switch {
	case pub.IsUnspecified():
		return fmt.Sprintf("public IP %s is unspecified", pub)
	case pub.IsLoopback():
		return fmt.Sprintf("public IP %s is a loopback address", pub)
	case pub.IsMulticast():
		return fmt.Sprintf("public IP %s is a multicast address", pub)
	case pub == limitedBroadcast:
		return fmt.Sprintf("public IP %s is the limited broadcast address", pub)
	}
	if i, ok := s.local[pub]; ok {
		dev := s.iface
		if i != s.ifaceIndex {
			dev = fmt.Sprintf("link %d", i)
		}
		return fmt.Sprintf("public IP %s is an address of this host (%s)", pub, dev)
	}
	if !backend.Contains(s.onLink, pub) {
		return fmt.Sprintf("public IP %s is not on-link: %s is attached to %v only; host-gw needs all hosts on one L2 segment", pub, s.iface, s.onLink)
	}
	for _, p := range s.onLink {
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
