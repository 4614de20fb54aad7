package hostgw

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

// TestLocalRouteTakesPeerSubnet: a route of the local table over a peer's
// subnet (AnyIP: `ip route add local 10.244.2.0/24 dev lo`) makes the
// kernel deliver that peer's traffic to this host, ahead of the peer's
// route, which stays as wanted. Watch wakes when it comes and goes, and
// the pass names it once, as another route taking part of a peer's subnet,
// with nothing changed; and once when it is gone. A shorter one (`local
// 10.244.0.0/16`) takes nothing while the kernel keeps the local and main
// tables in one tree, where the peer's longer route wins, and is not
// named; once a policy rule is added the kernel looks the local table up
// first, it takes every peer's traffic, and the pass names it. Before,
// host-gw said nothing while every packet to the peer stayed on this host.
func TestLocalRouteTakesPeerSubnet(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
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
	anyIP := func(dst string) *netlink.Route {
		return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst)), LinkIndex: lo.Attrs().Index,
			Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: unix.RTPROT_STATIC}
	}
	routedLocally := func(addr string) bool {
		t.Helper()
		rs, err := nl.RouteGet(backend.IP(netip.MustParseAddr(addr)))
		if err != nil {
			t.Fatal(err)
		}
		return len(rs) == 1 && rs[0].Type == unix.RTN_LOCAL
	}
	// show is the routes of ss, for a message.
	show := func(ss []backend.Shadowing) string {
		var s []string
		for _, sh := range ss {
			s = append(s, sh.Route+" from "+sh.PeerSubnet)
		}
		return "[" + strings.Join(s, "; ") + "]"
	}
	// pass reconciles twice, checking that nothing changes and what
	// Result.Found names.
	pass := func(when string, want ...backend.Shadowing) {
		t.Helper()
		for range 2 {
			res := h.reconcile(p2, p3)
			if res.Changed() {
				t.Errorf("%s: pass changed %v, want nothing", when, res)
			}
			var got []backend.Shadowing
			if res.Found != nil {
				got = res.Found.Shadowing
			}
			if show(got) != show(want) {
				t.Fatalf("%s: Result.Found.Shadowing %s, want %s", when, show(got), show(want))
			}
		}
	}
	dev := "dev#" + strconv.Itoa(lo.Attrs().Index)
	same := backend.Shadowing{Route: "local 10.244.2.0/24 " + dev + " table local proto static", PeerSubnet: "10.244.2.0/24"}
	wide := backend.Shadowing{Route: "local 10.244.0.0/16 " + dev + " table local proto static", PeerSubnet: "10.244.2.0/24"}

	wakes, stop := h.watch(t)
	defer stop()
	if err := nl.RouteAdd(anyIP("10.244.2.0/24")); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitWake(t, wakes, "local route added")
	if !routedLocally("10.244.2.5") {
		t.Fatal("the kernel does not deliver 10.244.2.5 to this host with local 10.244.2.0/24: the test's premise fails")
	}
	pass("with local 10.244.2.0/24", same)
	const found = `"msg"="another route takes part of a peer's subnet" "route"="local 10.244.2.0/24 `
	if n := h.countLogs(found); n != 1 {
		t.Errorf("%d lines with %s after two passes, want 1; logs:\n%s", n, found, h.logText())
	}

	if err := nl.RouteAdd(anyIP("10.244.0.0/16")); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitWake(t, wakes, "shorter local route added")
	if routedLocally("10.244.3.5") {
		t.Fatal("the kernel delivers 10.244.3.5 to this host before any policy rule: the test's premise fails")
	}
	pass("with local 10.244.0.0/16 and no policy rule", same)

	// Any rule splits the tables; this one matches no packet of the test.
	rule := netlink.NewRule()
	rule.Family, rule.Priority, rule.Table = netlink.FAMILY_V4, 100, 100
	rule.Src = backend.IPNet(netip.MustParsePrefix("198.19.255.0/24"))
	if err := nl.RuleAdd(rule); err != nil {
		t.Fatal(err)
	}
	if !routedLocally("10.244.3.5") {
		t.Fatal("the kernel does not deliver 10.244.3.5 to this host once a policy rule is in: the test's premise fails")
	}
	pass("with local 10.244.0.0/16 and a policy rule", wide, same)

	for _, r := range []*netlink.Route{anyIP("10.244.2.0/24"), anyIP("10.244.0.0/16")} {
		if err := nl.RouteDel(r); err != nil {
			t.Fatal(err)
		}
		nstest.AwaitWake(t, wakes, "local route deleted")
	}
	pass("with the local routes gone")
	const gone = `"msg"="a route that took part of a peer's subnet no longer does" "route"="local 10.244.`
	if n := h.countLogs(gone); n != 2 {
		t.Errorf("%d lines with %s, want 2; logs:\n%s", n, gone, h.logText())
	}
	h.check("route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\nroute 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74")
}
