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
// a pass no longer does. The kernel's own routes are left out: one inside
// a peer's subnet comes with an address of ours there, for which the peer
// is skipped (Segment.LocalIn). It belongs to the Reconcile goroutine.
type ShadowLog struct {
	log  logr.Logger
	seen map[string]string // route text → the peer subnet it lies in
}

// NewShadowLog returns a ShadowLog that logs to log.
func NewShadowLog(log logr.Logger) *ShadowLog {
	return &ShadowLog{log: log, seen: map[string]string{}}
}

// Check judges a pass: main is the main-table routes it read (PassRoutes),
// want the peer routes it programs; mine, when not nil, says which of main
// the backend takes as its own (vxlan: those through its device, which it
// deletes), and which are then not another program's. It allocates
// nothing when main holds no route of another program but the kernel's.
func (s *ShadowLog) Check(main []netlink.Route, want []Route, mine func(*netlink.Route) bool) {
	var found map[string]string
	for i := range main {
		r := &main[i]
		if r.Protocol == RouteProtocol || r.Protocol == unix.RTPROT_KERNEL || r.Dst == nil ||
			r.Table != unix.RT_TABLE_MAIN || mine != nil && mine(r) {
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
	if found == nil && len(s.seen) == 0 {
		return
	}
	s.seen = found
	if s.seen == nil {
		s.seen = map[string]string{}
	}
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
