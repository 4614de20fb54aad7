package backend_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestDelRouteForeignNexthopObjectRoute: another program's route through a
// nexthop object, which a backend claims (proto static here, under the key
// of a route it wants), is listed with its nexthop's gateway and device, and
// the kernel does not match a delete naming them: ESRCH, the route stays.
// DelRoute must not take that for "gone": the route would stay ahead of
// ours for good, "already gone" on every pass. It deletes it by its key and
// protocol when it is that protocol's only route under the key, fails when
// it is not, and takes one deleted meanwhile as gone.
func TestDelRouteForeignNexthopObjectRoute(t *testing.T) {
	ns := nstest.New(t)
	ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	ip := nexthop7(t, ns, "198.18.0.9")
	foreign := func() []backend.Route {
		t.Helper()
		main, err := backend.MainRoutes(ns.Handle)
		if err != nil {
			t.Fatal(err)
		}
		var rs []backend.Route
		for _, r := range backend.ClaimRoutes(main, func(r backend.Route) bool { return r.Protocol == unix.RTPROT_STATIC }) {
			if r.Protocol != 0 {
				rs = append(rs, r)
			}
		}
		return rs
	}
	for _, args := range [][]string{
		{"route", "add", "10.244.2.0/24", "via", "198.18.0.2", "dev", "ext0", "proto", "74"},
		{"route", "prepend", "10.244.2.0/24", "nhid", "7", "proto", "static"},
		{"route", "append", "10.244.2.0/24", "via", "198.18.0.3", "dev", "ext0", "proto", "static"},
	} {
		if err := ip(args...); err != nil {
			t.Fatal(err)
		}
	}
	have := foreign()
	if len(have) != 2 {
		t.Fatalf("claimed %v, want the nhid route and the appended one", have)
	}
	nhRoute, other := have[0], have[1]
	if nhRoute.Gw != netip.MustParseAddr("198.18.0.9") {
		nhRoute, other = other, nhRoute
	}
	w := backend.NetlinkWriter{H: ns.Handle}
	if err := w.DelRoute(nhRoute); err == nil || !strings.Contains(err.Error(), "still listed") {
		t.Errorf("DelRoute(%v) beside another route of its protocol under its key = %v; want an error saying it is still listed", nhRoute, err)
	}
	if err := w.DelRoute(other); err != nil {
		t.Fatalf("DelRoute(%v) = %v", other, err)
	}
	if err := w.DelRoute(nhRoute); err != nil {
		t.Errorf("DelRoute(%v) alone of its protocol under its key = %v", nhRoute, err)
	}
	if have := foreign(); len(have) != 0 {
		t.Errorf("left %v", have)
	}
	checkList(t, "our routes", backend.OurRoutes, ns.Handle, []backend.Route{
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: nhRoute.LinkIndex, Type: unix.RTN_UNICAST},
	})

	// Someone else deleted it first: gone, not deleted by us.
	if err := ip("route", "prepend", "10.244.2.0/24", "nhid", "7", "proto", "static"); err != nil {
		t.Fatal(err)
	}
	if err := ns.Handle.RouteDel(&netlink.Route{Dst: backend.IPNet(nhRoute.Dst), Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	if err := w.DelRoute(nhRoute); err != backend.ErrGone {
		t.Errorf("DelRoute of a route deleted meanwhile = %v, want ErrGone", err)
	}
}
