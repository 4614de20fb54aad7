package backend

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
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
// It also reports another program's route of the local table that takes
// part of a peer's subnet (ShadowHost.Local): AnyIP's `local 10.244.0.0/16
// dev lo`, which makes this host take the peer's traffic for its own.
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
// by index: blackhole 10.244.2.64/26 proto bird; local 10.244.0.0/16 dev#1
// table local proto boot), and the peer's subnet.
type Shadowing struct {
	Route, PeerSubnet string
	dst               netip.Prefix
	local             bool // a route of the local table
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
//
// Local is the routes of the local table that may take part of a peer's
// subnet (LocalRoutes). The kernel takes a route of the local table ahead
// of a main-table route as long or shorter: one as long as the route
// carrying a peer's subnet, or longer, takes what it covers of it. A
// shorter one takes it too where the kernel keeps the two tables apart and
// looks the local table up first, as it does once the host has had a
// policy rule; until then it keeps them in one tree, where the longer
// prefix wins. LocalWins tells which, asked whether the kernel routes a,
// an address of a peer's subnet, by r, a route of Local shorter than the
// route carrying that subnet, carry: split when it does, known when the
// kernel's answer tells (RoutedBy). When it is nil, or no answer tells,
// such a route is taken to take nothing.
type ShadowHost struct {
	Network, Subnet      netip.Prefix
	SubnetMin, SubnetMax netip.Addr
	SubnetLen            int
	Labels               map[netip.Addr]string
	Carrier              netip.Prefix
	Local                []netlink.Route
	LocalWins            func(r *netlink.Route, a netip.Addr, carry netip.Prefix) (split, known bool)
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
// and which are then not another program's (no route of host.Local is).
// It allocates nothing when main holds no route of another program but the
// kernel's for this host's subnet or outside the network and host.Local
// none that takes from a peer, nor when it finds what the last pass did but
// for the route text of each other program's route it finds.
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
	var order localOrder
	for i := range host.Local {
		r := &host.Local[i]
		dst, ok := localCandidate(r, network)
		if !ok || own.IsValid() && own.Contains(dst.Addr()) && dst.Bits() >= own.Bits() {
			continue
		}
		if in := localTakes(r, dst, want, carrier, host.LocalWins, &order); in.IsValid() {
			s.shadowing = append(s.shadowing, Shadowing{Route: shadowText(r, dst), PeerSubnet: in.String(), dst: dst, local: true})
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

// localProbes bounds how many times a pass asks the kernel about the
// peer subnets that shorter routes of the local table cover (localTakes)
// before it leaves the tables' order unknown: an answer that names neither
// the route asked about nor the peer's (a longer route of another
// program's holds the address asked) tells nothing.
const localProbes = 4

// localOrder is what a pass learnt of how the kernel orders the local
// table and the main table (ShadowHost.LocalWins), which holds for the
// whole host: known once an answer told, split when it takes a route of
// the local table ahead of a longer one of the main table; asked counts
// the questions.
type localOrder struct {
	known, split bool
	asked        int
}

// localTakes returns the peer subnet of want that r, a route of the local
// table to dst, takes from, or the zero Prefix. Of the subnets it overlaps
// and is as long as the route carrying (the subnet's own route, or
// carrier) or longer, the longest, then the first; when there is none, of
// those whose carrying route it is shorter than, the longest, then the
// first, if the kernel takes the local table ahead (order, found by asking
// wins about the first address of those subnets, in that order, up to
// localProbes times a pass).
func localTakes(r *netlink.Route, dst netip.Prefix, want []Route, carrier netip.Prefix, wins func(*netlink.Route, netip.Addr, netip.Prefix) (bool, bool), order *localOrder) netip.Prefix {
	carrying := func(sn netip.Prefix) netip.Prefix {
		if carrier.IsValid() {
			return carrier
		}
		return sn
	}
	// next is the subnet of want after last (the zero Prefix: the first)
	// in the order longest, then lowest, that dst overlaps and is as long
	// as its carrying route or longer (sure), or shorter.
	next := func(sure bool, last netip.Prefix) netip.Prefix {
		var in netip.Prefix
		for j := range want {
			sn := want[j].Dst
			if !sn.Overlaps(dst) || dst.Bits() >= carrying(sn).Bits() != sure {
				continue
			}
			if last.IsValid() && (sn.Bits() > last.Bits() || sn.Bits() == last.Bits() && !last.Addr().Less(sn.Addr())) {
				continue // at or before last
			}
			if sn.Bits() > in.Bits() || sn.Bits() == in.Bits() && sn.Addr().Less(in.Addr()) {
				in = sn
			}
		}
		return in
	}
	if in := next(true, netip.Prefix{}); in.IsValid() {
		return in
	}
	first := next(false, netip.Prefix{})
	if !first.IsValid() {
		return first
	}
	for sn := first; !order.known && wins != nil && sn.IsValid() && order.asked < localProbes; sn = next(false, sn) {
		order.asked++
		order.split, order.known = wins(r, sn.Addr(), carrying(sn))
	}
	if order.known && order.split {
		return first
	}
	return netip.Prefix{}
}

// localCandidate returns the destination of r, a route of the local table,
// and whether it may take part of a peer's subnet in network: an IPv4
// route overlapping network that is not the kernel's (the local and
// broadcast routes of this host's addresses) nor a throw route (which
// sends the look-up on to the next policy rule). The routes of the local
// table of other programs are few: AnyIP's, a proxy's.
func localCandidate(r *netlink.Route, network netip.Prefix) (netip.Prefix, bool) {
	if r.Table != unix.RT_TABLE_LOCAL || r.Protocol == unix.RTPROT_KERNEL || r.Type == unix.RTN_THROW || !network.IsValid() {
		return netip.Prefix{}, false
	}
	dst := netip.PrefixFrom(netip.IPv4Unspecified(), 0) // a nil Dst is the default route
	if r.Dst != nil {
		var ok bool
		if dst, ok = PrefixFromIPNet(r.Dst); !ok {
			return netip.Prefix{}, false
		}
	}
	return dst, dst.Addr().Is4() && dst.Overlaps(network)
}

// LocalRoutes returns the routes of the local table, read through h, that
// may take part of a peer's subnet in network (localCandidate); none when
// network is not valid. Most hosts have none.
//
// The dump is asked for with strict checking on, for the kernel to send
// the local table alone, and the kernel's routes in it, one or two for
// each address of the host (kube-proxy's 5 000 to 50 000 service
// addresses on kube-ipvs0), are passed over by their header before their
// attributes are read: the read allocates its buffer (64 kB) and nothing
// for them. A namespace with no route at all has no table yet
// (noMainTable), and no such route.
func LocalRoutes(h *netlink.Handle, network netip.Prefix) ([]netlink.Route, error) {
	network = network.Masked()
	if !network.IsValid() {
		return nil, nil
	}
	var rs []netlink.Route
	s, own := handleSocket(h)
	if !own {
		all, err := ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
		for i := range all {
			if _, ok := localCandidate(&all[i], network); ok && all[i].Flags&unix.RTM_F_CLONED == 0 {
				rs = append(rs, all[i])
			}
		}
		return rs, err
	}
	got, err := Dump("local routes", func() ([]netlink.Route, error) {
		rs = rs[:0] // a dump tried again starts again
		var r rtRoute
		err := eachMessage(s, "route", unix.RTM_GETROUTE, unix.RTM_NEWROUTE, &nl.RtMsg{RtMsg: unix.RtMsg{Family: unix.AF_INET, Table: unix.RT_TABLE_LOCAL}}, true,
			func(m []byte) error {
				keep, err := localMessage(m, &r, network)
				if err != nil {
					return fmt.Errorf("route dump: unreadable route (%d bytes%s): %w", len(m), hexHead(m), err)
				}
				if keep {
					rs = append(rs, r.route())
				}
				return nil
			})
		return rs, err
	})
	if noMainTable(err) {
		return nil, nil
	}
	return got, err
}

// LocalTable gives each pass the routes of the local table that may take
// part of a peer's subnet (LocalRoutes), reading the table only when they
// may have changed since the last pass read it: while a Watch's
// subscription holds, an event about such a route (Filter) or a new
// subscription (Subscribed), after which events may have been lost, says
// so. Without a subscription (the passes before Watch runs) each pass
// reads it. On a kube-proxy node the local table holds a route of the
// kernel's for each of its 5 000 to 50 000 service addresses: a read of
// 20 000 of them took 33–44 ms on the shared test machine, where the
// pass's read of the main table took 5–6 (BenchmarkLocalRoutes), and
// most hosts have no such route at all. Routes, Filter, Subscribed and
// Unwatched may be called from different goroutines; Routes by one alone.
type LocalTable struct {
	// watched is set from a Watch's first subscription to its end,
	// stale by each event about a route LocalRoutes keeps and each
	// subscription: Routes reads the table when watched is not set or
	// stale is.
	watched, stale atomic.Bool
	routes         []netlink.Route // the last read's, never changed
	read           bool            // routes holds a read's
	failed         string          // the last failed read's error, until one reads
	// list, when set, reads in place of LocalRoutes (tests).
	list func(*netlink.Handle, netip.Prefix) ([]netlink.Route, error)
}

// Routes returns the routes LocalRoutes returns, read through h, or
// those of the last read (none before one) when nothing since says they
// may have changed or the read fails. They only say what takes from a
// peer (ShadowLog), so a failed read fails no pass: it is logged to log,
// once until a read succeeds or fails otherwise, and the next pass reads
// again.
func (l *LocalTable) Routes(h *netlink.Handle, network netip.Prefix, log logr.Logger) []netlink.Route {
	// Cleared before the read: an event during it marks the next pass's.
	if l.read && l.watched.Load() && !l.stale.Swap(false) {
		return l.routes
	}
	l.stale.Store(false)
	list := l.list
	if list == nil {
		list = LocalRoutes
	}
	rs, err := list(h, network)
	if err != nil {
		l.stale.Store(true)
		if msg := err.Error(); msg != l.failed {
			l.failed = msg
			log.Error(err, "read the local table; judging its routes as the last read found them, and reading it again next pass")
		}
		return l.routes
	}
	l.routes, l.read, l.failed = rs, true, ""
	return rs
}

// Filter returns an EventFilter.Route func that accepts what
// LocalRouteEvent(network) accepts, marking the table to be read again.
func (l *LocalTable) Filter(network netip.Prefix) func(netlink.RouteUpdate) bool {
	local := LocalRouteEvent(network)
	return func(u netlink.RouteUpdate) bool {
		if !local(u) {
			return false
		}
		l.stale.Store(true)
		return true
	}
}

// Subscribed is for EventFilter.Subscribed: the events may have missed a
// change since the last read, and from now on none is missed.
func (l *LocalTable) Subscribed() {
	l.stale.Store(true) // before watched: a pass that sees this sees both
	l.watched.Store(true)
}

// Unwatched is called when Watch ends: each pass reads the table again.
func (l *LocalTable) Unwatched() { l.watched.Store(false) }

// OnSubscribed returns an EventFilter.Subscribed for a Watch: the table
// is read again (Subscribed), then then, when not nil, is called.
func (l *LocalTable) OnSubscribed(then func()) func() {
	return func() {
		l.Subscribed()
		if then != nil {
			then()
		}
	}
}

// LocalRouteFilter returns an EventFilter.Route func for a Watch that
// accepts what the first of filters to accept does, in their order, or
// else what l's Filter(network) accepts (marking the table to be read
// again).
func (l *LocalTable) LocalRouteFilter(network netip.Prefix, filters ...func(netlink.RouteUpdate) bool) func(netlink.RouteUpdate) bool {
	local := l.Filter(network)
	return func(u netlink.RouteUpdate) bool {
		for _, f := range filters {
			if f(u) {
				return true
			}
		}
		return local(u)
	}
}

// localMessage reads m, a message of a dump of the local table, into r
// and says whether LocalRoutes keeps it: an IPv4 route, not cloned,
// of the local table (by RTA_TABLE, or the header's table when there is
// none), that localCandidate takes. A message of the kernel's, by its
// header's protocol, is not read further; nor is one shorter than struct
// rtmsg, an error.
func localMessage(m []byte, r *rtRoute, network netip.Prefix) (bool, error) {
	if len(m) >= unix.SizeofRtMsg && m[5] == unix.RTPROT_KERNEL {
		return false, nil
	}
	if err := parseRoute(m, r); err != nil {
		return false, err
	}
	table := uint32(r.table)
	if r.hasTable {
		table = r.rtaTable
	}
	if r.family != unix.AF_INET || r.flags&unix.RTM_F_CLONED != 0 || table != unix.RT_TABLE_LOCAL {
		return false, nil
	}
	var mask [net.IPv6len]byte
	nr := netlink.Route{Table: int(table), Protocol: netlink.RouteProtocol(r.protocol), Type: int(r.typ)}
	dst, ok := r.dstNet(mask[:0])
	if ok {
		nr.Dst = &dst
	}
	_, keep := localCandidate(&nr, network)
	return keep, nil
}

// RoutedBy returns a ShadowHost.LocalWins that asks the kernel, through h,
// which route it sends a packet to a by (ip route get fibmatch). It knows
// the answer when that is r (its destination, type and device), or for r
// a route that answers with an error (blackhole, unreachable, prohibit)
// the error of r's type, or any route the kernel names as of the local
// table, which it does only where it keeps the tables apart (another
// route of the local table, longer than r, over a): the kernel takes the
// local table ahead (true); and when it is the unicast route to carry of
// the main table, the peer's route, which a shorter route of the local
// table did not take from (false). Another answer (another route, another
// error) tells nothing.
func RoutedBy(h *netlink.Handle) func(r *netlink.Route, a netip.Addr, carry netip.Prefix) (split, known bool) {
	return routedBy(func(a netip.Addr) ([]netlink.Route, error) {
		return h.RouteGetWithOptions(IP(a), &netlink.RouteGetOptions{FIBMatch: true})
	})
}

// routedBy is RoutedBy with the kernel's answer for a given by get.
func routedBy(get func(a netip.Addr) ([]netlink.Route, error)) func(r *netlink.Route, a netip.Addr, carry netip.Prefix) (split, known bool) {
	return func(r *netlink.Route, a netip.Addr, carry netip.Prefix) (bool, bool) {
		got, err := get(a)
		if err != nil {
			want, ok := routeErrors[r.Type]
			if ok && errors.Is(err, want) {
				return true, true
			}
			return false, false
		}
		if len(got) != 1 {
			return false, false
		}
		gdst, _ := PrefixFromIPNet(got[0].Dst)
		rdst, _ := PrefixFromIPNet(r.Dst)
		if gdst == rdst && got[0].Type == r.Type && got[0].LinkIndex == r.LinkIndex || got[0].Table == unix.RT_TABLE_LOCAL {
			return true, true
		}
		return false, gdst == carry.Masked() && got[0].Type == unix.RTN_UNICAST
	}
}

// routeErrors are the errors by which the kernel answers a look-up that a
// route of each type takes, as `ip route get` reports them.
var routeErrors = map[int]error{unix.RTN_BLACKHOLE: unix.EINVAL, unix.RTN_UNREACHABLE: unix.EHOSTUNREACH, unix.RTN_PROHIBIT: unix.EACCES}

// LocalRouteEvent returns an EventFilter.Route func that accepts events
// about the routes of the local table that ShadowLog judges
// (localCandidate) in network, the cluster's IPv4 network: so that a pass
// says when one comes or goes. The kernel's routes for the host's
// addresses, which come and go with them (kube-proxy's service
// addresses), wake nothing.
func LocalRouteEvent(network netip.Prefix) func(netlink.RouteUpdate) bool {
	network = network.Masked()
	return func(u netlink.RouteUpdate) bool {
		_, ok := localCandidate(&u.Route, network)
		return ok
	}
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
		why := "the kernel follows the longest prefix: packets to the addresses it covers go where it says, not to the peer; agentd leaves it alone: delete it if it is not wanted (ip route del <its destination and metric>)"
		if f.local {
			why = "a route of the local table, which the kernel takes ahead of the main table's: packets to the addresses it covers go where it says (local: to this host, as AnyIP wants), not to the peer; " +
				"agentd leaves it alone: narrow it or delete it if it is not wanted (ip route del <its type, destination and device> table local)"
		}
		kvs := []any{"route", f.Route, "peerSubnet", f.PeerSubnet, "why", why}
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
// [type] dst [via gw] [dev#N] [table local] [metric N] proto P.
func shadowText(r *netlink.Route, dst netip.Prefix) string {
	var b strings.Builder
	switch r.Type {
	case unix.RTN_LOCAL:
		b.WriteString("local ")
	case unix.RTN_BROADCAST:
		b.WriteString("broadcast ")
	case unix.RTN_ANYCAST:
		b.WriteString("anycast ")
	case unix.RTN_MULTICAST:
		b.WriteString("multicast ")
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
	if r.Table == unix.RT_TABLE_LOCAL {
		b.WriteString(" table local")
	}
	if r.Priority != 0 {
		b.WriteString(" metric " + strconv.Itoa(r.Priority))
	}
	b.WriteString(" proto " + r.Protocol.String())
	return b.String()
}
