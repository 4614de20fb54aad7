package hostgw

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestOffLinkSaysHow: the reason an off-link peer is skipped says how this
// host reaches its public IP instead, so that the operator knows what to
// change: a peer behind a router, one on the segment of another interface
// of this host (two uplinks, --iface naming the other), one whose route is
// a blackhole, one this host has no route to. The namespace:
//
//	ext0 198.18.0.1/24 (the external interface) ── veth ── peer0
//	ext1 198.18.1.1/24                          ── veth ── peer1
//	198.18.2.0/24 via 198.18.0.253 dev ext0
//	blackhole 198.18.3.0/24
//	198.18.4.0/24 nexthop via 198.18.0.251 dev ext0 nexthop via 198.18.0.252 dev ext0
//
// The on-link peer is routed all along, and a default route added later
// changes the reason of the peer that had no route, logged again.
func TestOffLinkSaysHow(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	h.ns.AddVeth(t, "ext1", "peer1", netip.MustParsePrefix("198.18.1.1/24"))
	ext := h.ext.Attrs().Index
	for _, r := range []*netlink.Route{
		{Dst: backend.IPNet(netip.MustParsePrefix("198.18.2.0/24")), Gw: net.IPv4(198, 18, 0, 253), LinkIndex: ext},
		{Dst: backend.IPNet(netip.MustParsePrefix("198.18.3.0/24")), Type: unix.RTN_BLACKHOLE},
		{Dst: backend.IPNet(netip.MustParsePrefix("198.18.4.0/24")), MultiPath: []*netlink.NexthopInfo{
			{LinkIndex: ext, Gw: net.IPv4(198, 18, 0, 251)}, {LinkIndex: ext, Gw: net.IPv4(198, 18, 0, 252)}}},
	} {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatalf("add route %s: %v", r, err)
		}
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	router := lease("10.244.3.0/24", "198.18.2.3", Type)
	other := lease("10.244.4.0/24", "198.18.1.4", Type)
	hole := lease("10.244.5.0/24", "198.18.3.3", Type)
	ecmp := lease("10.244.6.0/24", "198.18.4.4", Type)
	far := lease("10.244.7.0/24", "198.19.0.4", Type)
	peers := []subnet.Lease{p2, router, other, hole, ecmp, far}

	const offLink = "is not on-link: ext0 is attached to [198.18.0.0/24] only; "
	const suffix = "; host-gw needs all hosts on one L2 segment"
	want := map[string]string{
		router.Key(): "public IP 198.18.2.3 " + offLink + "this host routes it through a router: 198.18.2.0/24 via 198.18.0.253 dev ext0" + suffix,
		other.Key():  "public IP 198.18.1.4 " + offLink + "it is on-link through ext1 (198.18.1.0/24 dev ext1), not ext0, the interface agentd uses (--iface)" + suffix,
		hole.Key():   "public IP 198.18.3.3 " + offLink + "this host's route to it is blackhole 198.18.3.0/24" + suffix,
		ecmp.Key():   "public IP 198.18.4.4 " + offLink + "this host routes it through routers: 198.18.4.0/24 via 198.18.0.251, 198.18.0.252" + suffix,
		far.Key():    "public IP 198.19.0.4 " + offLink + "this host has no route to it" + suffix,
	}
	check := func(step string, res backend.Result) {
		t.Helper()
		if res.Skipped != len(want) || len(res.SkippedLeases) != len(want) {
			t.Errorf("%s: skipped %d %q, want %d", step, res.Skipped, res.SkippedLeases, len(want))
		}
		for _, s := range res.SkippedLeases {
			if s.Reason != want[s.Key] {
				t.Errorf("%s: %s skipped for\n\t%q\nwant\n\t%q", step, s.Key, s.Reason, want[s.Key])
			}
		}
		routes, err := backend.OurRoutes(nl)
		if err != nil {
			t.Fatal(err)
		}
		if len(routes) != 1 || routes[0].Dst != p2.Subnet || routes[0].Gw != p2.Attrs.PublicIP {
			t.Errorf("%s: our routes %v, want only the on-link peer's", step, routes)
		}
	}
	check("first pass", h.reconcile(peers...))
	check("again", h.reconcile(peers...))

	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: net.IPv4(198, 18, 0, 254), LinkIndex: ext}); err != nil {
		t.Fatal(err)
	}
	want[far.Key()] = "public IP 198.19.0.4 " + offLink + "this host routes it through a router: default via 198.18.0.254 dev ext0" + suffix
	check("with a default route", h.reconcile(peers...))
	for key, reason := range want {
		if n := h.countLogs(fmt.Sprintf(`"lease"=%q "reason"=%q`, key, reason)); n != 1 {
			t.Errorf("logged %s's reason %d times, want once", key, n)
		}
	}
}
