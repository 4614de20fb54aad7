package backend

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// shadowLines is how many routes a pass logs as newly found at the default
// verbosity; the rest of that pass's go to -v=2, counted in one line.
const shadowLines = 10

// ShadowLog reports another program's main-table route that takes part of a
// peer's subnet from the route a backend programs for it: one to a
// destination inside the peer's subnet and longer than it (a static route,
// another CNI plugin's, Calico's blackhole route for its /26 block left
// from a migration). The kernel follows the longest prefix, so packets to
// the addresses it covers go where it says, or nowhere, while the peer's
// route stays in place and every pass finds the kernel as it wants it. The
// backends leave such a route alone (it may be the operator's, on
// purpose): each is logged once when a pass first finds it, and once when
// a pass no longer does.
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
// once, naming its interface and address, and once when it is gone. It
// belongs to the Reconcile goroutine.
type ShadowLog struct {
	log    logr.Logger
	seen   map[string]string // route text → the peer subnet it lies in
	strays map[stray]bool    // the kernel's routes reported, as reported
}

// stray is a connected route into another subnet of the cluster network as
// ShadowLog reports it.
type stray struct{ iface, addr, route string }

// ShadowHost is what ShadowLog.Check knows of this host: the cluster's IPv4
// network, this host's subnet in it, the subnets leases are taken from
// (SubnetMin to SubnetMax, each SubnetLen long: the network config's, with
// its defaults), and the labels of its addresses (Segment.Local). With no
// Network or Subnet, the kernel's routes are not judged; with no SubnetMin
// or SubnetMax, the whole network is taken as leasable.
type ShadowHost struct {
	Network, Subnet      netip.Prefix
	SubnetMin, SubnetMax netip.Addr
	SubnetLen            int
	Labels               map[netip.Addr]string
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
	return &ShadowLog{log: log, seen: map[string]string{}, strays: map[stray]bool{}}
}

// Check judges a pass: main is the main-table routes it read (PassRoutes),
// want the peer routes it programs, host this host as the pass knows it;
// mine, when not nil, says which of main the backend takes as its own
// (vxlan: those through its device, which it deletes), and which are then
// not another program's. It allocates nothing when main holds no route of
// another program but the kernel's for this host's subnet or outside the
// network.
func (s *ShadowLog) Check(main []netlink.Route, want []Route, host ShadowHost, mine func(*netlink.Route) bool) {
	var found map[string]string
	var strays map[stray]bool
	// Masked only when valid: Masked of a zero Prefix allocates an error.
	network, own := host.Network, host.Subnet
	judge := network.IsValid() && own.IsValid()
	var lo, hi uint32
	if judge {
		network, own = network.Masked(), own.Masked()
		lo, hi = host.leasable(network)
	}
	for i := range main {
		r := &main[i]
		if r.Protocol == RouteProtocol || r.Dst == nil || r.Table != unix.RT_TABLE_MAIN || mine != nil && mine(r) {
			continue
		}
		if r.Protocol == unix.RTPROT_KERNEL {
			if judge {
				strays = addStray(strays, r, network, own, lo, hi, host.Labels)
			}
			continue
		}
		dst, ok := PrefixFromIPNet(r.Dst)
		if !ok || !dst.Addr().Is4() {
			continue
		}
		// The longest peer subnet holding it, whatever want's order: of
		// overlapping leases (bad data), the one whose route it takes from.
		var in netip.Prefix
		for j := range want {
			if sn := want[j].Dst; sn.Bits() < dst.Bits() && sn.Contains(dst.Addr()) && sn.Bits() >= in.Bits() {
				in = sn
			}
		}
		if in.IsValid() {
			if found == nil {
				found = map[string]string{}
			}
			found[shadowText(r, dst)] = in.String()
		}
	}
	logged, more := 0, 0
	for text, sn := range found {
		if s.seen[text] == sn {
			continue
		}
		kvs := []any{"route", text, "peerSubnet", sn,
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
	for text, sn := range s.seen {
		if found[text] != sn {
			s.log.Info("a route that took part of a peer's subnet no longer does", "route", text, "peerSubnet", sn)
		}
	}
	s.checkStrays(strays, own)
	if found == nil && len(s.seen) == 0 {
		return
	}
	s.seen = found
	if s.seen == nil {
		s.seen = map[string]string{}
	}
}

// checkStrays logs the connected routes into another subnet of the network
// that a pass found (found) and the last did not, and those it no longer
// finds; own is this host's subnet.
func (s *ShadowLog) checkStrays(found map[stray]bool, own netip.Prefix) {
	logged, more := 0, 0
	for st := range found {
		if s.strays[st] {
			continue
		}
		kvs := []any{"iface", st.iface, "address", st.addr, "route", st.route, "ownSubnet", own.String(),
			"why", "the kernel sends this host's traffic to that subnet, another host's or one etcd may lease to one, out through " + st.iface +
				", where no such host is; most often a bridge left at a subnet this host leased before (docker0: give dockerd subnet.env's --bip and restart it; " +
				"cni0: the first new pod moves it to this host's gateway); agentd does not touch other programs' addresses: delete it (ip addr del " +
				st.addr + " dev " + st.iface + ") if nothing uses it"}
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
	for st := range s.strays {
		if !found[st] {
			s.log.Info("an address of this host no longer routes another subnet of the cluster network", "iface", st.iface, "address", st.addr, "route", st.route)
		}
	}
	if found == nil && len(s.strays) == 0 {
		return
	}
	s.strays = found
	if s.strays == nil {
		s.strays = map[stray]bool{}
	}
}

// addStray adds the connected route r to strays (made when nil) when it
// leads into network outside own, this host's subnet, and into the
// addresses lo to hi that leases are taken from, and returns strays. A
// route inside network but outside those (a network of the hosts' own in a
// Network that holds it, as flannel's documentation shows with SubnetMin)
// takes nothing from any host.
func addStray(strays map[stray]bool, r *netlink.Route, network, own netip.Prefix, lo, hi uint32, labels map[netip.Addr]string) map[stray]bool {
	dst, ok := PrefixFromIPNet(r.Dst)
	if !ok || !dst.Addr().Is4() || dst.Bits() < network.Bits() || !network.Contains(dst.Addr()) || dst.Overlaps(own) {
		return strays
	}
	if first := be32(dst.Addr()); first > hi || first|uint32(1<<(32-dst.Bits())-1) < lo {
		return strays
	}
	st, ok := strayOf(r, dst, labels)
	if !ok {
		return strays
	}
	if strays == nil {
		strays = map[stray]bool{}
	}
	strays[st] = true
	return strays
}

// strayOf is the connected route r, to dst, as checkStrays reports it: the
// label of its source address (the link, or an alias such as eth0:1), and
// that address with dst's length when dst holds it, as ip addr shows it
// (a point-to-point address's peer network does not); false for a route
// with no source address, which no address made.
func strayOf(r *netlink.Route, dst netip.Prefix, labels map[netip.Addr]string) (stray, bool) {
	src, ok := netip.AddrFromSlice(r.Src)
	if !ok {
		return stray{}, false
	}
	src = src.Unmap()
	st := stray{iface: labels[src], addr: src.String(), route: dst.String()}
	if st.iface == "" {
		st.iface = "dev#" + strconv.Itoa(r.LinkIndex)
	}
	if dst.Contains(src) {
		st.addr = netip.PrefixFrom(src, dst.Bits()).String()
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
