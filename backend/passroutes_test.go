package backend_test

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestPassRoute(t *testing.T) {
	const ext, cni0 = 2, 7
	network := netip.MustParsePrefix("10.244.0.0/16")
	dst := func(s string) *net.IPNet { return backend.IPNet(netip.MustParsePrefix(s)) }
	gw := net.IPv4(198, 18, 0, 250)
	for _, tc := range []struct {
		name    string
		r       netlink.Route
		network netip.Prefix
		want    bool
	}{
		{"ours outside the network", netlink.Route{Dst: dst("192.0.2.0/24"), Gw: gw, LinkIndex: ext, Protocol: backend.RouteProtocol}, network, true},
		{"ours, no network", netlink.Route{Dst: dst("10.244.2.0/24"), Gw: gw, LinkIndex: ext, Protocol: backend.RouteProtocol}, netip.Prefix{}, true},
		{"bird's, outside", netlink.Route{Dst: dst("198.18.128.1/32"), Gw: gw, LinkIndex: ext, Protocol: unix.RTPROT_BIRD}, network, false},
		{"bird's, multipath", netlink.Route{Dst: dst("198.18.200.0/24"), Protocol: unix.RTPROT_BIRD, MultiPath: []*netlink.NexthopInfo{{LinkIndex: ext, Gw: gw}}}, network, false},
		{"bird's, inside", netlink.Route{Dst: dst("10.244.5.0/24"), Gw: gw, LinkIndex: ext, Protocol: unix.RTPROT_BIRD}, network, true},
		{"bird's, inside, no network", netlink.Route{Dst: dst("10.244.5.0/24"), Gw: gw, LinkIndex: ext, Protocol: unix.RTPROT_BIRD}, netip.Prefix{}, false},
		{"the network itself", netlink.Route{Dst: dst("10.244.0.0/16"), LinkIndex: cni0, Protocol: unix.RTPROT_STATIC}, network, true},
		{"wider than the network", netlink.Route{Dst: dst("10.0.0.0/8"), Gw: gw, LinkIndex: ext, Protocol: unix.RTPROT_STATIC}, network, false},
		{"a bridge's, inside", netlink.Route{Dst: dst("10.244.1.0/24"), LinkIndex: cni0, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_KERNEL}, network, true},
		{"the interface's subnet", netlink.Route{Dst: dst("198.18.0.0/24"), LinkIndex: ext, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_KERNEL}, network, true},
		{"a scope-link route through the interface", netlink.Route{Dst: dst("198.18.1.0/24"), LinkIndex: ext, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT}, netip.Prefix{}, true},
		{"a scope-link default route through the interface", netlink.Route{LinkIndex: ext, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_BOOT}, network, true},
		{"another link's scope-link route", netlink.Route{Dst: dst("192.0.2.0/24"), LinkIndex: cni0, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_KERNEL}, network, false},
		{"the default route", netlink.Route{Gw: gw, LinkIndex: ext, Protocol: unix.RTPROT_DHCP}, network, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := backend.PassRoute(ext, tc.network)(&tc.r); got != tc.want {
				t.Errorf("PassRoute(%d, %v)(%v) = %v, want %v", ext, tc.network, tc.r, got, tc.want)
			}
		})
	}
}

// TestPassRoutesAsMainRoutes: in a namespace whose main table holds a
// routing daemon's routes besides ours, others' in the cluster network and
// the external interface's, PassRoutes lists exactly the routes a pass
// reads, and what a pass makes of them (ReadSegment, OwnedRoutes,
// ClaimRoutes) is what it makes of MainRoutes' whole table.
func TestPassRoutesAsMainRoutes(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	dev := ns.AddVeth(t, "vx0", "vx1", netip.Prefix{})
	network := netip.MustParsePrefix("10.244.0.0/16")
	gw := func(last byte) net.IP { return net.IPv4(198, 18, 0, last) }
	dst := func(s string) *net.IPNet { return backend.IPNet(netip.MustParsePrefix(s)) }
	e, d := ext.Attrs().Index, dev.Attrs().Index
	kept := []*netlink.Route{
		{Dst: dst("10.244.2.0/24"), Gw: gw(2), LinkIndex: e, Protocol: backend.RouteProtocol},
		{Dst: dst("10.244.3.0/24"), Gw: gw(3), LinkIndex: e, Protocol: unix.RTPROT_STATIC},
		{Dst: dst("10.244.4.0/24"), Gw: net.IPv4(10, 244, 4, 0), LinkIndex: d, Flags: int(netlink.FLAG_ONLINK), Protocol: unix.RTPROT_BOOT},
		{Dst: dst("198.18.1.0/24"), LinkIndex: e, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC},
	}
	dropped := []*netlink.Route{
		{Gw: gw(254), LinkIndex: e, Protocol: unix.RTPROT_DHCP},
		{Dst: dst("198.18.200.0/24"), Protocol: unix.RTPROT_BIRD,
			MultiPath: []*netlink.NexthopInfo{{LinkIndex: e, Gw: gw(250)}, {LinkIndex: e, Gw: gw(251)}}},
		{Dst: dst("192.0.2.0/24"), LinkIndex: d, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC},
	}
	for i := range 2000 {
		dropped = append(dropped, &netlink.Route{Dst: backend.IPNet(netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18, byte(128 + i>>8), byte(i)}), 32)),
			Gw: gw(250), LinkIndex: e, Protocol: unix.RTPROT_BIRD})
	}
	for _, r := range append(kept, dropped...) {
		if err := ns.Handle.RouteAdd(r); err != nil {
			t.Fatalf("add %v: %v", r, err)
		}
	}

	all, err := backend.MainRoutes(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	pass, err := backend.PassRoutes(ns.Handle, e, network)
	if err != nil {
		t.Fatal(err)
	}
	dsts := func(rs []netlink.Route) []string {
		var s []string
		for _, r := range rs {
			s = append(s, backend.RouteFrom(r).Dst.String())
		}
		slices.Sort(s)
		return s
	}
	// ext0's own subnet, through the kernel's route, besides those kept.
	want := []string{"10.244.2.0/24", "10.244.3.0/24", "10.244.4.0/24", "198.18.0.0/24", "198.18.1.0/24"}
	if got := dsts(pass); !slices.Equal(got, want) {
		t.Errorf("PassRoutes lists %v (%d of the table's %d routes); want %v", got, len(pass), len(all), want)
	}

	segAll, err := backend.ReadSegment(ns.Handle, e, "ext0", all)
	if err != nil {
		t.Fatal(err)
	}
	segPass, err := backend.ReadSegment(ns.Handle, e, "ext0", pass)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(segAll.OnLink, segPass.OnLink) || !slices.Equal(segAll.Subnets, segPass.Subnets) {
		t.Errorf("segment from PassRoutes: on-link %v, subnets %v; from MainRoutes: %v, %v", segPass.OnLink, segPass.Subnets, segAll.OnLink, segAll.Subnets)
	}
	wantRoutes := []backend.Route{
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: e, Type: unix.RTN_UNICAST},
		{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("198.18.0.3"), LinkIndex: e, Type: unix.RTN_UNICAST},
	}
	if a, p := backend.OwnedRoutes(all, d, network, wantRoutes), backend.OwnedRoutes(pass, d, network, wantRoutes); !slices.Equal(a, p) {
		t.Errorf("OwnedRoutes of PassRoutes = %v; of MainRoutes = %v", p, a)
	}
	inNetwork := func(r backend.Route) bool { return network.Contains(r.Dst.Addr()) }
	if a, p := backend.ClaimRoutes(all, inNetwork), backend.ClaimRoutes(pass, inNetwork); !slices.Equal(a, p) {
		t.Errorf("ClaimRoutes of PassRoutes = %v; of MainRoutes = %v", p, a)
	}
}
