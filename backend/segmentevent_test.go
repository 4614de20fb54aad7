package backend_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestSegmentRouteEvent: the events that wake a backend for the segment are
// those about the routes ReadSegment reads as on-link: the main table's
// unicast scope-link routes without a gateway through the external
// interface. It woke for such routes of every table: a policy-routing table
// of the interface's (a routing daemon's, a cloud CNI's per-interface
// table), and the local table's broadcast routes, which the kernel rewrites
// with each address; each wake is a pass, and each pass a dump of the whole
// main table.
func TestSegmentRouteEvent(t *testing.T) {
	const ext, other = 2, 7
	dst := backend.IPNet(netip.MustParsePrefix("198.18.1.0/24"))
	for _, tc := range []struct {
		name string
		r    netlink.Route
		want bool
	}{
		{"main, scope link", netlink.Route{Dst: dst, LinkIndex: ext, Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}, true},
		{"main, default scope link", netlink.Route{LinkIndex: ext, Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}, true},
		{"another table", netlink.Route{Dst: dst, LinkIndex: ext, Scope: netlink.SCOPE_LINK, Table: 100, Type: unix.RTN_UNICAST}, false},
		{"local, broadcast", netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.18.0.255/32")), LinkIndex: ext, Scope: netlink.SCOPE_LINK,
			Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_BROADCAST, Protocol: unix.RTPROT_KERNEL}, false},
		{"main, with a gateway", netlink.Route{Dst: dst, Gw: net.IPv4(198, 18, 0, 250), LinkIndex: ext, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}, false},
		{"main, another link", netlink.Route{Dst: dst, LinkIndex: other, Scope: netlink.SCOPE_LINK, Table: unix.RT_TABLE_MAIN, Type: unix.RTN_UNICAST}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, typ := range []uint16{unix.RTM_NEWROUTE, unix.RTM_DELROUTE} {
				u := netlink.RouteUpdate{Type: typ, Route: tc.r}
				if got := backend.SegmentRouteEvent(ext)(u); got != tc.want {
					t.Errorf("SegmentRouteEvent(%d)(%v, type %d) = %v, want %v", ext, tc.r, typ, got, tc.want)
				}
			}
		})
	}
}
