package hostgw

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestOffLinkHintTakesKernelsRoute: the hint names the route the kernel
// takes for the peer's public IP: of several to one destination, the one
// with the lowest metric, and never one with a TOS (a packet without TOS
// does not match it); a route whose nexthop is given by RTA_VIA is through
// a router like one with a gateway; one by a nexthop object says so. The routes are made up: paths reads
// them from its main func.
func TestOffLinkHintTakesKernelsRoute(t *testing.T) {
	const ext = 2
	dst := func(s string) *net.IPNet { return backend.IPNet(netip.MustParsePrefix(s)) }
	routes := []netlink.Route{
		{Dst: dst("198.19.0.0/24"), Type: unix.RTN_BLACKHOLE, Tos: 0x10, Table: unix.RT_TABLE_MAIN},
		{Dst: dst("198.19.0.0/24"), Gw: net.IPv4(198, 18, 0, 253), LinkIndex: ext, Priority: 100, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
		{Dst: dst("198.19.0.0/24"), Gw: net.IPv4(198, 18, 0, 252), LinkIndex: ext, Priority: 200, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
		{Dst: dst("198.20.0.0/24"), Via: &netlink.Via{AddrFamily: unix.AF_INET6, Addr: net.ParseIP("fe80::1")}, LinkIndex: ext, Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
		// "ip route add 198.21.0.0/24 nhid 7": no device, no gateway.
		{Dst: dst("198.21.0.0/24"), Type: unix.RTN_UNICAST, Table: unix.RT_TABLE_MAIN},
	}
	p := newPaths(nil, ext, func() ([]netlink.Route, error) { return routes, nil })
	p.names = map[int]string{ext: "ext0"} // no kernel to ask
	for _, tc := range []struct{ pub, hint string }{
		{"198.19.0.4", "this host routes it through a router: 198.19.0.0/24 via 198.18.0.253 dev ext0"},
		{"198.20.0.4", "this host routes it through a router: 198.20.0.0/24 via inet6 fe80::1 dev ext0"},
		{"198.21.0.4", "this host routes it by 198.21.0.0/24 (a nexthop object)"},
	} {
		if got := p.hint(netip.MustParseAddr(tc.pub), "ext0"); got != tc.hint {
			t.Errorf("hint for %s: %q; want %q", tc.pub, got, tc.hint)
		}
	}
}

// TestOffLinkHintWithoutDump: when the main table cannot be dumped, the
// reason gives no hint rather than say that this host has no route to the
// peer.
func TestOffLinkHintWithoutDump(t *testing.T) {
	p := newPaths(nil, 2, func() ([]netlink.Route, error) { return nil, errors.New("dump interrupted") })
	if got := p.hint(netip.MustParseAddr("198.19.0.4"), "ext0"); got != "" {
		t.Fatalf("hint with the dump failed: %q; want none", got)
	}
}

// TestOffLinkViaInet6Said: an IPv4 route whose nexthop is an IPv6 address
// (RTA_VIA, "ip route add … via inet6 …", Linux 5.2), to a peer's public
// IP, is named as ip route names it: before 2026-12-07 the reason read
// "via Family: 10, Address: fe80::1" (netlink.Via's String).
func TestOffLinkViaInet6Said(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	if err := h.ns.Sysctl("net.ipv6.conf.ext0.disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	route := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.20.0.0/24")), LinkIndex: h.ext.Attrs().Index,
		Via: &netlink.Via{AddrFamily: unix.AF_INET6, Addr: net.ParseIP("fe80::1")}}
	if err := nl.RouteAdd(route); err != nil {
		t.Fatalf("add %s: %v", route, err)
	}
	far := lease("10.244.4.0/24", "198.20.0.4", Type)
	res := h.reconcile(far)
	const want = "public IP 198.20.0.4 is not on-link: ext0 is attached to [198.18.0.0/24] only; " +
		"this host routes it through a router: 198.20.0.0/24 via inet6 fe80::1 dev ext0; host-gw needs all hosts on one L2 segment"
	if len(res.SkippedLeases) != 1 || res.SkippedLeases[0].Reason != want {
		t.Fatalf("skipped %+v; want %s skipped for %q", res.SkippedLeases, far.Key(), want)
	}
}
