package hostgw

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// paths tells, for the reason an off-link peer is skipped, how this host
// reaches the peer's public IP instead: "not on-link" alone leaves the
// operator to find out whether the peer sits behind a router (host-gw
// cannot reach it: vxlan can), on the segment of another interface of this
// host (every host must use the interface of the one segment they share:
// --iface), or nowhere at all. It answers from the main table's routes by
// longest prefix: the kernel's own choice but for policy rules, which the
// gateway of a main-table route does not pass either (backend.ReadSegment).
// A pass reads only the routes it can use (backend.PassRoutes), which
// seldom hold the route to a peer's public IP, so the whole table is dumped
// (main) at the first off-link peer of a pass: a pass with none costs
// nothing more, one with some a dump, and then one map look-up per prefix
// length in the table.
type paths struct {
	h    *netlink.Handle
	ext  int
	main func() ([]netlink.Route, error)
	// dumpErr is main's error, at the first hint.
	dumpErr error

	byDst map[netip.Prefix]netlink.Route // nil until the first hint
	bits  []int                          // the prefix lengths in byDst, longest first
	names map[int]string                 // link names asked of the kernel so far
}

func newPaths(h *netlink.Handle, ext int, main func() ([]netlink.Route, error)) *paths {
	return &paths{h: h, ext: ext, main: main}
}

// index keeps, for each destination, the route the kernel takes for a
// packet without TOS: the lowest metric among those with TOS 0. A dump that
// fails leaves it empty, and noted in dumpErr: no hint is given then.
func (p *paths) index() {
	p.byDst = make(map[netip.Prefix]netlink.Route)
	var rs []netlink.Route
	if p.main != nil {
		rs, p.dumpErr = p.main()
	}
	for _, r := range rs {
		if r.Table != unix.RT_TABLE_MAIN || r.Tos != 0 {
			continue
		}
		dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0)
		if r.Dst != nil {
			d, ok := backend.PrefixFromIPNet(r.Dst)
			if !ok || !d.Addr().Is4() {
				continue
			}
			dst = d.Masked()
		}
		o, ok := p.byDst[dst]
		if !ok {
			p.bits = append(p.bits, dst.Bits())
		}
		if !ok || r.Priority < o.Priority {
			p.byDst[dst] = r
		}
	}
	slices.Sort(p.bits)
	p.bits = slices.Compact(p.bits)
	slices.Reverse(p.bits)
}

// lookup returns the main table's route to a by longest prefix.
func (p *paths) lookup(a netip.Addr) (netlink.Route, netip.Prefix, bool) {
	if p.byDst == nil {
		p.index()
	}
	for _, bits := range p.bits {
		dst, _ := a.Prefix(bits)
		if r, ok := p.byDst[dst]; ok {
			return r, dst, true
		}
	}
	return netlink.Route{}, netip.Prefix{}, false
}

// hint says how the main table routes pub, an off-link peer's public IP, or
// "" when it routes it straight through the external interface (a route
// ReadSegment does not count as on-link, such as one of scope global). It
// is short: SkipLog cuts reasons to clip.Len.
func (p *paths) hint(pub netip.Addr, iface string) string {
	r, dst, ok := p.lookup(pub)
	switch {
	case p.dumpErr != nil:
		return ""
	case !ok:
		return "this host has no route to it"
	case r.Type != unix.RTN_UNICAST:
		return "this host's route to it is " + p.format(r, dst)
	case len(r.MultiPath) > 0:
		return "this host routes it through routers: " + p.format(r, dst)
	case r.Gw != nil || r.Via != nil:
		return "this host routes it through a router: " + p.format(r, dst)
	case r.LinkIndex == 0:
		// A nexthop object's route (nhid): Route does not say where.
		return fmt.Sprintf("this host routes it by %s (a nexthop object)", p.format(r, dst))
	case r.LinkIndex != p.ext:
		return fmt.Sprintf("it is on-link through %s (%s), not %s, the interface agentd uses (--iface)", p.name(r.LinkIndex), p.format(r, dst), iface)
	}
	return ""
}

// format prints r, the route to dst, as `ip route` does in short.
func (p *paths) format(r netlink.Route, dst netip.Prefix) string {
	var b strings.Builder
	if r.Type != unix.RTN_UNICAST {
		b.WriteString(routeType(r.Type) + " ")
	}
	if dst.Bits() == 0 {
		b.WriteString("default")
	} else {
		b.WriteString(dst.String())
	}
	var gws []string
	for _, nh := range r.MultiPath {
		switch {
		case nh.Gw != nil:
			gws = append(gws, nh.Gw.String())
		case nh.Via != nil:
			gws = append(gws, via(nh.Via))
		}
	}
	switch {
	case len(gws) > 0:
		b.WriteString(" via " + strings.Join(gws, ", "))
	case r.Gw != nil:
		b.WriteString(" via " + r.Gw.String())
	case r.Via != nil:
		b.WriteString(" via " + via(r.Via))
	}
	if r.LinkIndex > 0 {
		b.WriteString(" dev " + p.name(r.LinkIndex))
	}
	return b.String()
}

// via prints a nexthop given by RTA_VIA (an IPv6 one of an IPv4 route, "ip
// route add … via inet6 fe80::1") as ip route does: its family, then its
// address. netlink.Via's String reads "Family: 10, Address: fe80::1".
func via(d netlink.Destination) string {
	v, ok := d.(*netlink.Via)
	switch {
	case !ok:
		return d.String()
	case v.AddrFamily == unix.AF_INET:
		return "inet " + v.Addr.String()
	case v.AddrFamily == unix.AF_INET6:
		return "inet6 " + v.Addr.String()
	}
	return fmt.Sprintf("family %d %s", v.AddrFamily, v.Addr)
}

// name is the name of the link with index i, asked of the kernel once a pass.
func (p *paths) name(i int) string {
	if n, ok := p.names[i]; ok {
		return n
	}
	n := fmt.Sprintf("the link with index %d", i)
	if l, err := p.h.LinkByIndex(i); err == nil {
		n = l.Attrs().Name
	}
	if p.names == nil {
		p.names = map[int]string{}
	}
	p.names[i] = n
	return n
}

func routeType(t int) string {
	switch t {
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_THROW:
		return "throw"
	case unix.RTN_LOCAL:
		return "local"
	}
	return fmt.Sprintf("of type %d", t)
}
