package udp

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestShadowedPeerSubnetLogged: udp programs one route, the network's
// through flannel0, so another program's route longer than it takes what
// it overlaps of a peer's subnet: a blackhole for a /26 in it, an
// unreachable route for the whole /24 (which vxlan and host-gw would take
// over, as their route's key; udp has none). An address of this host in
// another subnet (a docker0 left at an old one) sends that subnet's
// traffic to docker0. Each is logged once, as by vxlan and host-gw, and
// is in the pass's Result for /status; the network's route is left as it
// is; once they go, each is said gone. Before, udp said nothing.
func TestShadowedPeerSubnetLogged(t *testing.T) {
	h := newTestNet(t)
	nl := h.host.Handle
	h.start()
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	h.reconcile(p2, p3)
	docker0 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}}
	if err := nl.LinkAdd(docker0); err != nil {
		t.Fatal(err)
	}
	stray := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.42.1/24"))}
	if err := nl.AddrAdd(docker0, stray); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(docker0); err != nil {
		t.Fatal(err)
	}
	others := []*netlink.Route{
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.64/26")), Type: unix.RTN_BLACKHOLE, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN},
		{Dst: backend.IPNet(netip.MustParsePrefix("10.244.3.0/24")), Type: unix.RTN_UNREACHABLE, Protocol: unix.RTPROT_STATIC, Table: unix.RT_TABLE_MAIN},
	}
	for _, r := range others {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatalf("add %v: %v", r, err)
		}
	}
	const (
		shadowed = `"msg"="another route takes part of a peer's subnet" `
		strayMsg = `"msg"="an address of this host routes another subnet of the cluster network to its interface" `
	)
	lines := []string{
		shadowed + `"route"="blackhole 10.244.2.64/26 proto static" "peerSubnet"="10.244.2.0/24"`,
		shadowed + `"route"="unreachable 10.244.3.0/24 proto static" "peerSubnet"="10.244.3.0/24"`,
		strayMsg + `"iface"="docker0" "address"="10.244.42.1/24" "route"="10.244.42.0/24" "ownSubnet"="10.244.1.0/24"`,
	}
	for pass := 1; pass <= 2; pass++ {
		res := h.reconcile(p2, p3)
		if res.Changed() {
			t.Errorf("pass %d with the routes: changed %v, want nothing (they are left alone)", pass, res)
		}
		if f := res.Found; f == nil || len(f.Shadowing) != 2 || len(f.Strays) != 1 ||
			f.Shadowing[0].Route != "blackhole 10.244.2.64/26 proto static" || f.Shadowing[1].PeerSubnet != "10.244.3.0/24" ||
			f.Strays[0].Iface != "docker0" || f.Strays[0].Address != "10.244.42.1/24" {
			t.Errorf("pass %d: Result.Found %+v, want the two routes and docker0's address", pass, f)
		}
	}
	for _, l := range lines {
		if n := h.countLogs(l); n != 1 {
			t.Errorf("%d lines with %s, want 1", n, l)
		}
	}
	routes, err := backend.OurRoutes(nl)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Dst != netip.MustParsePrefix("10.244.0.0/16") {
		t.Errorf("our routes with the others': %v, want the network's alone", routes)
	}

	for _, r := range others {
		if err := nl.RouteDel(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := nl.AddrDel(docker0, stray); err != nil {
		t.Fatal(err)
	}
	res := h.reconcile(p2, p3)
	if f := res.Found; f == nil || len(f.Shadowing)+len(f.Strays) != 0 {
		t.Errorf("with the routes and the address gone: Result.Found %+v, want empty", f)
	}
	for _, l := range []string{
		`"msg"="a route that took part of a peer's subnet no longer does" "route"="blackhole 10.244.2.64/26 proto static"`,
		`"msg"="a route that took part of a peer's subnet no longer does" "route"="unreachable 10.244.3.0/24 proto static"`,
		`"msg"="an address of this host no longer routes another subnet of the cluster network" "iface"="docker0"`,
	} {
		if n := h.countLogs(l); n != 1 {
			t.Errorf("%d lines with %s, want 1", n, l)
		}
	}
	if n := h.countLogs(`"kernel delete"`); n != 0 {
		t.Errorf("%d routes deleted, want none", n)
	}
}

// TestLocalRouteTakesPeerSubnet: a route of the local table into the
// network as long as udp's route for it through flannel0, or longer
// (AnyIP's `local 10.244.0.0/16 dev lo`; `local 10.244.3.0/24 dev lo`),
// makes the kernel deliver the peers' traffic it covers to this host ahead
// of that route, whether or not it keeps the tables in one tree. Watch
// wakes when one comes and goes; the pass names each once, as another
// route taking part of a peer's subnet, changes nothing, and names it gone
// once it is. The kernel's local routes (flannel0's address) and one
// inside this host's subnet are not named. Before, udp said nothing while
// every packet to those peers stayed on this host.
func TestLocalRouteTakesPeerSubnet(t *testing.T) {
	h := newTestNet(t)
	nl := h.host.Handle
	h.prepare()
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	p3 := lease("10.244.3.0/24", "198.18.0.3", Type)
	h.reconcile(p2, p3)
	wakes, stop := nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
	defer stop()
	anyIP := func(dst string) *netlink.Route {
		return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst)), LinkIndex: lo.Attrs().Index,
			Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: unix.RTPROT_BOOT}
	}
	inOwn := anyIP("10.244.1.128/25")
	if err := nl.RouteAdd(inOwn); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitWake(t, wakes, "local route inside this host's subnet added")
	dev := "dev#" + strconv.Itoa(lo.Attrs().Index)
	for _, tc := range []struct{ dst, peerSubnet, probe string }{
		{"10.244.0.0/16", "10.244.2.0/24", "10.244.3.5"},
		{"10.244.3.0/24", "10.244.3.0/24", "10.244.3.5"},
	} {
		r := anyIP(tc.dst)
		if err := nl.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
		nstest.AwaitWake(t, wakes, "local route "+tc.dst+" added")
		if rs, err := nl.RouteGet(backend.IP(netip.MustParseAddr(tc.probe))); err != nil || len(rs) != 1 || rs[0].Type != unix.RTN_LOCAL {
			t.Fatalf("with local %s the kernel routes %s by %v, %v; want it delivered to this host (the test's premise)", tc.dst, tc.probe, rs, err)
		}
		route := "local " + tc.dst + " " + dev + " table local proto boot"
		for pass := 1; pass <= 2; pass++ {
			res := h.reconcile(p2, p3)
			if res.Changed() {
				t.Errorf("local %s, pass %d: changed %v, want nothing", tc.dst, pass, res)
			}
			if f := res.Found; f == nil || len(f.Shadowing) != 1 || f.Shadowing[0].Route != route || f.Shadowing[0].PeerSubnet != tc.peerSubnet {
				t.Fatalf("local %s, pass %d: Result.Found %s, want %s taking from %s", tc.dst, pass, showFound(f), route, tc.peerSubnet)
			}
		}
		found := `"msg"="another route takes part of a peer's subnet" "route"="` + route + `" "peerSubnet"="` + tc.peerSubnet + `"`
		if n := h.countLogs(found); n != 1 {
			t.Errorf("%d lines with %s, want 1", n, found)
		}
		if err := nl.RouteDel(r); err != nil {
			t.Fatal(err)
		}
		nstest.AwaitWake(t, wakes, "local route "+tc.dst+" deleted")
		if res := h.reconcile(p2, p3); res.Found == nil || len(res.Found.Shadowing) != 0 {
			t.Errorf("local %s gone: Result.Found %s, want nothing", tc.dst, showFound(res.Found))
		}
		gone := `"msg"="a route that took part of a peer's subnet no longer does" "route"="` + route + `"`
		if n := h.countLogs(gone); n != 1 {
			t.Errorf("%d lines with %s, want 1", n, gone)
		}
	}
	if n := h.countLogsWith("a peer's subnet", "10.244.1.128/25"); n != 0 {
		t.Errorf("the local route inside this host's subnet named %d times, want never", n)
	}
}

// showFound is f's routes taking part of a peer's subnet, for a message.
func showFound(f *backend.Findings) string {
	if f == nil {
		return "nil"
	}
	var s []string
	for _, sh := range f.Shadowing {
		s = append(s, sh.Route+" from "+sh.PeerSubnet)
	}
	return "[" + strings.Join(s, "; ") + "]"
}
