package backend_test

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLocalTableReadWhenChanged: a LocalTable reads the local table at each
// pass while no subscription holds, and while one does only after an event
// about a route it keeps (Filter) or a new subscription (Subscribed); the
// kernel's routes for an address wake nothing. In between it gives the
// last read's routes, even when the kernel holds others: the events say
// when it does.
func TestLocalTableReadWhenChanged(t *testing.T) {
	ns := nstest.New(t)
	nl := ns.Handle
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	network := netip.MustParsePrefix("10.244.0.0/16")
	route := func(dst string) *netlink.Route {
		return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst)), LinkIndex: lo.Attrs().Index,
			Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: unix.RTPROT_BOOT}
	}
	var l backend.LocalTable
	filter := l.Filter(network)
	read := func(when string, want int) {
		t.Helper()
		rs := l.Routes(nl, network, logr.Discard())
		if len(rs) != want {
			t.Fatalf("%s: Routes = %v; want %d routes", when, rs, want)
		}
	}
	add := func(dst string) netlink.RouteUpdate {
		t.Helper()
		r := route(dst)
		if err := nl.RouteAdd(r); err != nil {
			t.Fatal(err)
		}
		return netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: *r}
	}
	read("no route, unwatched", 0)
	add("10.244.2.0/24")
	read("one route, unwatched", 1)
	l.Subscribed()
	read("subscribed", 1)
	u := add("10.244.3.0/24")
	read("a route added, its event not seen yet", 1)
	if kernel := (netlink.RouteUpdate{Type: unix.RTM_NEWROUTE, Route: netlink.Route{Dst: route("10.244.9.1/32").Dst, Table: unix.RT_TABLE_LOCAL,
		Type: unix.RTN_LOCAL, Protocol: unix.RTPROT_KERNEL}}); filter(kernel) {
		t.Error("an address's local route woke Watch")
	}
	read("the kernel's route's event seen", 1)
	if !filter(u) {
		t.Fatal("the route's event did not wake Watch")
	}
	read("its event seen", 2)
	add("10.244.4.0/24")
	read("another added, its event not seen", 2)
	l.Subscribed()
	read("subscribed again", 3)
	add("10.244.5.0/24")
	l.Unwatched()
	read("unwatched", 4)
}
