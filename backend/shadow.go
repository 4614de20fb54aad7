package backend

import (
	"cmp"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// shadowLines is how many findings of one kind a pass logs as new at the
// default verbosity, the first by destination; the rest of that pass's go
// to -v=2, counted in one line.
const shadowLines = 10

// ShadowLog reports another program's main-table route that takes part of a
// peer's subnet from the route a backend programs for it: one to a
// destination inside the peer's subnet and longer than it (a static route,
// another CNI plugin's, Calico's blackhole route for its /26 block left
// from a migration), or, where one route carries every peer's subnet (udp's
// for the network, ShadowHost.Carrier), one longer than that route that
// overlaps a peer's subnet. The kernel follows the longest prefix, so
// packets to the addresses it covers go where it says, or nowhere, while
// the peer's route stays in place and every pass finds the kernel as it
// wants it. The backends leave such a route alone (it may be the
// operator's, on purpose): each is logged once when a pass first finds it,
// and once when a pass no longer does.
//
// It also reports the kernel's own routes (proto kernel, an address's
// connected route) into the cluster network but outside this host's
// subnet: an address of this host in a subnet it does not hold, most often
// a bridge left at a subnet it leased before (docker0 kept at the old
// subnet's .1 by a daemon.json or drop-in without subnet.env's --bip, cni0
// after the host moved). The kernel then sends this host's traffic to that
// subnet out through the bridge, where no host of it is: the traffic of a
// peer that leases it (whose route the backends leave out, Segment.LocalIn,
// so as not to replace the kernel's), or of one that will. The address is
// another program's, which agentd does not touch: each such route is logged
// once, naming its interface and address, and once when it is gone.
//
// A pass's new and gone findings are logged in the order of their
// destinations, so that which reach the default verbosity (shadowLines)
// does not depend on map order. What the last pass found is kept for
// /status (Report). It belongs to the Reconcile goroutine.
type ShadowLog struct {
	log   logr.Logger
	found *Findings // the last pass's, never nil, never changed once made
	// Check's, reused from pass to pass: a pass that finds what the
	// last did allocates nothing for them.
	shadowing []Shadowing
	strays    []Stray
}

// Findings is what a ShadowLog's last pass found, as it logged it, each
// list sorted by destination. A ShadowLog makes a new one when a pass finds
// otherwise and never changes one it handed out (Report): the agent reads
// it after the pass, from another goroutine.
type Findings struct {
	// Shadowing is other programs' routes that take part of a peer's
	// subnet ("another route takes part of a peer's subnet").
	Shadowing []Shadowing
	// Strays is the connected routes of addresses of this host into
	// another subnet of the cluster network ("an address of this host
	// routes another subnet of the cluster network to its interface").
	Strays []Stray
}

// Shadowing is another program's route that takes part of a peer's subnet:
// the route, as its log line's route= says it (ip route's form, the device
// by index: blackhole 10.244.2.64/26 proto bird), and the peer's subnet.
type Shadowing struct {
	Route, PeerSubnet string
	dst               netip.Prefix
}

// Stray is a connected route into another subnet of the cluster network:
// the label of the address that made it (its interface, or an alias such
// as eth0:1), the address (with the route's length when the route holds
// it, as ip addr shows it), and the route's destination.
type Stray struct {
	Iface, Address, Route string
	dst                   netip.Prefix
}

// ShadowHost is what ShadowLog.Check knows of this host: the cluster's IPv4
// network, this host's subnet in it, the subnets leases are taken from
// (SubnetMin to SubnetMax, each SubnetLen long: the network config's, with
// its defaults), and the labels of its addresses (Segment.Local). With no
// Network or Subnet, the kernel's routes are not judged; with no SubnetMin
// or SubnetMax, the whole network is taken as leasable.
//
// Carrier is, for a backend that programs one route for every peer's
// subnet instead of one each (udp: the network through flannel0), that
// route's destination: a route longer than it takes the part of a peer's
// subnet it overlaps, or the whole subnet. Without it, each peer's route is
// want's route to its subnet.
type ShadowHost struct {
	Network, Subnet      netip.Prefix
	SubnetMin, SubnetMax netip.Addr
	SubnetLen            int
	Labels               map[netip.Addr]string
	Carrier              netip.Prefix
}

// leasable returns the first and last IPv4 address, as numbers, of the
// subnets h's leases are taken from: SubnetMin's first to SubnetMax's last,
// or network's when h does not say.
func (h ShadowHost) leasable(network netip.Prefix) (lo, hi uint32) {
	if h.SubnetMin.Is4() && h.SubnetMax.Is4() && h.SubnetLen >= 1 && h.SubnetLen <= 32 {
		return be32(h.SubnetMin), be32(h.SubnetMax) | uint32(1<<(32-h.SubnetLen)-1)
	}
	return be32(network.Addr()), be32(network.Addr()) | uint32(1<<(32-network.Bits())-1)
}

// NewShadowLog returns a ShadowLog that logs to log.
func NewShadowLog(log logr.Logger) *ShadowLog {
	return &ShadowLog{log: log, found: &Findings{}}
}

// Report sets res.Found to what the last pass (Check) found.
func (s *ShadowLog) Report(res *Result) { res.Found = s.found }

// Check judges a pass: main is the main-table routes it read (PassRoutes),
// want the peer routes it programs (with host.Carrier, a route to each
// peer's subnet, which it programs through the carrier), host this host as
// the pass knows it; mine, when not nil, says which of main the backend
// takes as its own (vxlan: those through its device, which it deletes),
// and which are then not another program's. It allocates nothing when main
// holds no route of another program but the kernel's for this host's
// subnet or outside the network, nor when it finds what the last pass did
// but for the route text of each other program's route it finds.
func (s *ShadowLog) Check(main []netlink.Route, want []Route, host ShadowHost, mine func(*netlink.Route) bool) {
	s.shadowing, s.strays = s.shadowing[:0], s.strays[:0]
	// Masked only when valid: Masked of a zero Prefix allocates an error.
	network, own, carrier := host.Network, host.Subnet, host.Carrier
	judge := network.IsValid() && own.IsValid()
	var lo, hi uint32
	if judge {
		network, own = network.Masked(), own.Masked()
		lo, hi = host.leasable(network)
	}
	if carrier.IsValid() {
		carrier = carrier.Masked()
	}
	for i := range main {
		r := &main[i]
		if r.Protocol == RouteProtocol || r.Dst == nil || r.Table != unix.RT_TABLE_MAIN || mine != nil && mine(r) {
			continue
		}
		if r.Protocol == unix.RTPROT_KERNEL {
			if judge {
				s.strays = addStray(s.strays, r, network, own, lo, hi, host.Labels)
			}
			continue
		}
		dst, ok := PrefixFromIPNet(r.Dst)
		if !ok || !dst.Addr().Is4() {
			continue
		}
		if in := takenFrom(dst, want, carrier); in.IsValid() {
			s.shadowing = append(s.shadowing, Shadowing{Route: shadowText(r, dst), PeerSubnet: in.String(), dst: dst})
		}
	}
	slices.SortFunc(s.shadowing, cmpShadowing)
	shadowing := slices.CompactFunc(s.shadowing, func(a, b Shadowing) bool { return cmpShadowing(a, b) == 0 })
	slices.SortFunc(s.strays, cmpStray)
	strays := slices.CompactFunc(s.strays, func(a, b Stray) bool { return a == b })
	s.shadowing, s.strays = shadowing, strays
	sameShadowing, sameStrays := slices.Equal(shadowing, s.found.Shadowing), slices.Equal(strays, s.found.Strays)
	if sameShadowing && sameStrays {
		return
	}
	if !sameShadowing {
		s.logShadowing(shadowing)
	}
	if !sameStrays {
		s.logStrays(strays, own)
	}
	s.found = &Findings{Shadowing: slices.Clone(shadowing), Strays: slices.Clone(strays)}
}

// takenFrom returns the peer subnet of want that another program's route to
// dst takes from, or the zero Prefix: the longest that dst overlaps and is
// longer than the route carrying it (want's own route, or carrier), and of
// those the first, whatever want's order: of overlapping leases (bad data),
// the one whose route it takes from.
func takenFrom(dst netip.Prefix, want []Route, carrier netip.Prefix) netip.Prefix {
	var in netip.Prefix
	for j := range want {
		sn := want[j].Dst
		takes := sn.Bits() < dst.Bits() && sn.Contains(dst.Addr())
		if carrier.IsValid() {
			takes = dst.Bits() > carrier.Bits() && sn.Overlaps(dst)
		}
		if takes && (sn.Bits() > in.Bits() || sn.Bits() == in.Bits() && sn.Addr().Less(in.Addr())) {
			in = sn
		}
	}
	return in
}

// cmpShadowing orders findings by destination, then route text.
func cmpShadowing(a, b Shadowing) int {
	return cmp.Or(a.dst.Addr().Compare(b.dst.Addr()), cmp.Compare(a.dst.Bits(), b.dst.Bits()), strings.Compare(a.Route, b.Route))
}

// cmpStray orders findings by destination, then interface and address.
func cmpStray(a, b Stray) int {
	return cmp.Or(a.dst.Addr().Compare(b.dst.Addr()), cmp.Compare(a.dst.Bits(), b.dst.Bits()),
		strings.Compare(a.Iface, b.Iface), strings.Compare(a.Address, b.Address))
}

// logShadowing logs the routes of found, sorted, that the last pass did
// not find, or found in another peer's subnet, the first shadowLines at the
// default verbosity, and those the last pass found that found has not.
func (s *ShadowLog) logShadowing(found []Shadowing) {
	was := s.found.Shadowing
	logged, more := 0, 0
	for _, f := range found {
		if j, ok := slices.BinarySearchFunc(was, f, cmpShadowing); ok && was[j].PeerSubnet == f.PeerSubnet {
			continue
		}
		kvs := []any{"route", f.Route, "peerSubnet", f.PeerSubnet,
			"why", "the kernel follows the longest prefix: packets to the addresses it covers go where it says, not to the peer; agentd leaves it alone: delete it if it is not wanted (ip route del <its destination and metric>)"}
		if logged < shadowLines {
			logged++
			s.log.Info("another route takes part of a peer's subnet", kvs...)
		} else {
			more++
			s.log.V(2).Info("another route takes part of a peer's subnet", kvs...)
		}
	}
	if more > 0 {
		s.log.Info("more routes take part of a peer's subnet; each is logged at -v=2", "count", more)
	}
	for _, w := range was {
		if j, ok := slices.BinarySearchFunc(found, w, cmpShadowing); !ok || found[j].PeerSubnet != w.PeerSubnet {
			s.log.Info("a route that took part of a peer's subnet no longer does", "route", w.Route, "peerSubnet", w.PeerSubnet)
		}
	}
}

// logStrays logs the connected routes of found, sorted, into another
// subnet of the network that the last pass did not find, the first
// shadowLines at the default verbosity, and those the last pass found that
// found has not; own is this host's subnet.
func (s *ShadowLog) logStrays(found []Stray, own netip.Prefix) {
	was := s.found.Strays
	logged, more := 0, 0
	for _, st := range found {
		if _, ok := slices.BinarySearchFunc(was, st, cmpStray); ok {
			continue
		}
		kvs := []any{"iface", st.Iface, "address", st.Address, "route", st.Route, "ownSubnet", own.String(),
			"why", "the kernel sends this host's traffic to that subnet, another host's or one etcd may lease to one, out through " + st.Iface +
				", where no such host is; most often a bridge left at a subnet this host leased before (docker0: give dockerd subnet.env's --bip and restart it; " +
				"cni0: the first new pod moves it to this host's gateway); agentd does not touch other programs' addresses: delete it (ip addr del " +
				st.Address + " dev " + st.Iface + ") if nothing uses it"}
		if logged < shadowLines {
			logged++
			s.log.Info("an address of this host routes another subnet of the cluster network to its interface", kvs...)
		} else {
			more++
			s.log.V(2).Info("an address of this host routes another subnet of the cluster network to its interface", kvs...)
		}
	}
	if more > 0 {
		s.log.Info("more addresses of this host route another subnet of the cluster network; each is logged at -v=2", "count", more)
	}
	for _, st := range was {
		if _, ok := slices.BinarySearchFunc(found, st, cmpStray); !ok {
			s.log.Info("an address of this host no longer routes another subnet of the cluster network", "iface", st.Iface, "address", st.Address, "route", st.Route)
		}
	}
}

// addStray appends the connected route r to strays when it
// leads into network outside own, this host's subnet, and into the
// addresses lo to hi that leases are taken from, and returns strays. A
// route inside network but outside those (a network of the hosts' own in a
// Network that holds it, as flannel's documentation shows with SubnetMin)
// takes nothing from any host.
func addStray(strays []Stray, r *netlink.Route, network, own netip.Prefix, lo, hi uint32, labels map[netip.Addr]string) []Stray {
	dst, ok := PrefixFromIPNet(r.Dst)
	if !ok || !dst.Addr().Is4() || dst.Bits() < network.Bits() || !network.Contains(dst.Addr()) || dst.Overlaps(own) {
		return strays
	}
	if first := be32(dst.Addr()); first > hi || first|uint32(1<<(32-dst.Bits())-1) < lo {
		return strays
	}
	if st, ok := strayOf(r, dst, labels); ok {
		strays = append(strays, st)
	}
	return strays
}

// strayOf is the connected route r, to dst, as logStrays reports it: the
// label of its source address (the link, or an alias such as eth0:1), and
// that address with dst's length when dst holds it, as ip addr shows it
// (a point-to-point address's peer network does not); false for a route
// with no source address, which no address made.
func strayOf(r *netlink.Route, dst netip.Prefix, labels map[netip.Addr]string) (Stray, bool) {
	src, ok := netip.AddrFromSlice(r.Src)
	if !ok {
		return Stray{}, false
	}
	src = src.Unmap()
	st := Stray{Iface: labels[src], Address: src.String(), Route: dst.String(), dst: dst}
	if st.Iface == "" {
		st.Iface = "dev#" + strconv.Itoa(r.LinkIndex)
	}
	if dst.Contains(src) {
		st.Address = netip.PrefixFrom(src, dst.Bits()).String()
	}
	return st, true
}

// shadowText is r as ip route prints it, close enough to delete it by:
// [type] dst [via gw] [dev#N] [metric N] proto P.
func shadowText(r *netlink.Route, dst netip.Prefix) string {
	var b strings.Builder
	switch r.Type {
	case unix.RTN_BLACKHOLE:
		b.WriteString("blackhole ")
	case unix.RTN_UNREACHABLE:
		b.WriteString("unreachable ")
	case unix.RTN_PROHIBIT:
		b.WriteString("prohibit ")
	case unix.RTN_THROW:
		b.WriteString("throw ")
	}
	b.WriteString(dst.String())
	if gw, ok := netip.AddrFromSlice(r.Gw); ok {
		b.WriteString(" via " + gw.Unmap().String())
	}
	if r.LinkIndex != 0 {
		b.WriteString(" dev#" + strconv.Itoa(r.LinkIndex))
	}
	if r.Priority != 0 {
		b.WriteString(" metric " + strconv.Itoa(r.Priority))
	}
	b.WriteString(" proto " + r.Protocol.String())
	return b.String()
}
