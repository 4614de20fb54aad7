package backend_test

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestPassRoutesAsNetlink: PassRoutes, which reads its dump in place
// (eachMessage, parseRoute), lists the routes netlink's RouteListFiltered
// lists of the main table that PassRoute keeps, in every field
// routeFromMessage sets (routeUpdate): 3000 routes of ours and 2000 of a
// routing daemon (some thirty datagrams), routes with a gateway, onlink,
// of another protocol inside the network, with a metric, a TOS and route
// metrics, of other tables (left out), multipath, scope link on the
// interface and another device, blackhole, via an IPv6 gateway, the
// kernel's own; and so for a zero network.
func TestPassRoutesAsNetlink(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	ns.AddVeth(t, "ext1", "peer1", netip.MustParsePrefix("198.18.1.1/24"))
	if err := ns.Sysctl("net.ipv6.conf.ext0.disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	ip := ns.Cmd(t, "ip", "add routes with")
	ip("-6", "address", "add", "2001:db8::1/64", "dev", "ext0", "nodad")
	for _, r := range [][]string{
		{"10.244.1.0/24", "via", "198.18.0.2", "dev", "ext0", "proto", "74"},
		{"10.244.2.0/24", "via", "10.244.2.0", "dev", "ext0", "onlink", "proto", "74"},
		{"10.244.3.0/24", "via", "198.18.0.3", "dev", "ext0", "metric", "100", "proto", "static"},
		{"10.244.4.0/24", "via", "198.18.0.4", "dev", "ext0", "tos", "0x10", "mtu", "1400", "advmss", "1360", "initcwnd", "10", "initrwnd", "20", "features", "ecn"},
		{"10.244.5.0/24", "via", "198.18.0.5", "dev", "ext0", "table", "100", "proto", "74"},
		{"default", "via", "198.18.0.6", "dev", "ext0"},
		{"10.244.6.0/24", "proto", "74", "nexthop", "via", "198.18.0.7", "dev", "ext0", "weight", "2", "nexthop", "via", "198.18.0.8", "dev", "ext0", "onlink"},
		{"10.244.7.0/24", "dev", "ext0", "scope", "link", "src", "198.18.0.1"},
		{"192.0.2.0/24", "dev", "ext0", "scope", "link"},
		{"192.0.3.0/24", "dev", "ext1", "scope", "link"},
		{"blackhole", "10.244.8.0/24", "proto", "74"},
		{"10.244.9.0/24", "via", "inet6", "2001:db8::2", "dev", "ext0"},
		{"198.51.100.0/24", "via", "198.18.0.9", "dev", "ext0", "proto", "bird"},
	} {
		ip(append([]string{"route", "add"}, r...)...)
	}
	for i := range 3000 {
		a := netip.AddrFrom4([4]byte{10, 244, byte(16 + i>>5), byte(i << 3)})
		if err := ns.Handle.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.PrefixFrom(a, 29)), Gw: backend.IP(netip.MustParseAddr("198.18.0.2")),
			LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol}); err != nil {
			t.Fatal(err)
		}
	}
	addRouterRoutes(t, ns, ext, 2000)

	for _, network := range []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), {}} {
		rs, err := backend.PassRoutes(ns.Handle, ext.Attrs().Index, network)
		if err != nil {
			t.Fatal(err)
		}
		got := showRoutes(rs)
		all, err := ns.Handle.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			t.Fatal(err)
		}
		want := showRoutes(slices.DeleteFunc(all, func(r netlink.Route) bool { return !backend.PassRoute(ext.Attrs().Index, network)(&r) }))
		if len(got) < 3000 || !slices.Equal(got, want) {
			t.Errorf("network %v: %d routes, netlink's RouteListFiltered with PassRoute %d; first differences:\n%s", network, len(got), len(want), firstDiffs(got, want))
		}
	}
}

func showRoutes(rs []netlink.Route) []string {
	var s []string
	for _, r := range rs {
		s = append(s, routeUpdate(netlink.RouteUpdate{Route: r}))
	}
	return s
}
