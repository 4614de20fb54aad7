package vxlan

import (
	"context"
	"net/netip"
	"strconv"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLocalRouteNamedOnce: a route of the local table that makes a peer's
// gateway <subnet>.0 this host's is said in that peer's skip reason
// (TestLocalRouteGatewaySkipped) and not again as a route taking part of a
// peer's subnet; one that takes part of a programmed peer's subnet without
// its gateway (`local 10.244.4.128/25 dev lo`) is, as host-gw and udp say
// it, and Watch wakes when it comes. Before, vxlan said nothing of the
// second while the kernel delivered that half of the peer's traffic to
// this host.
func TestLocalRouteNamedOnce(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	lo := h.link("lo")
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	anyIP := func(dst string) *netlink.Route {
		return &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix(dst)), LinkIndex: lo.Attrs().Index,
			Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: unix.RTPROT_STATIC}
	}
	if err := nl.RouteAdd(anyIP("10.244.2.0/23")); err != nil {
		t.Fatal(err)
	}
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"),
		lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03"),
		lease("10.244.4.0/24", "198.18.0.4", "vxlan", "02:00:00:00:00:04"),
	}
	res, err := h.b.Reconcile(context.Background(), h.own, peers)
	if err != nil || res.Skipped != 2 {
		t.Fatalf("pass with local 10.244.2.0/23: %v, %v; want p2 and p3 skipped", res, err)
	}
	if res.Found == nil || len(res.Found.Shadowing) != 0 {
		t.Errorf("Result.Found %+v, want nothing: the route is named in the skips", res.Found)
	}
	wakes, stop := h.watch(t)
	defer stop()
	if err := nl.RouteAdd(anyIP("10.244.4.128/25")); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitWake(t, wakes, "local route added")
	res = h.reconcile(peers...)
	route := "local 10.244.4.128/25 dev#" + strconv.Itoa(lo.Attrs().Index) + " table local proto static"
	if f := res.Found; f == nil || len(f.Shadowing) != 1 || f.Shadowing[0].Route != route || f.Shadowing[0].PeerSubnet != "10.244.4.0/24" {
		t.Errorf("Result.Found %+v, want %s taking from 10.244.4.0/24", res.Found, route)
	}
	if res.Changed() || res.Skipped != 2 {
		t.Errorf("pass with the /25 too: %v, want p2 and p3 skipped and nothing changed", res)
	}
	found := `"msg"="another route takes part of a peer's subnet" "route"="` + route + `" "peerSubnet"="10.244.4.0/24"`
	if n := h.countLogs(found); n != 1 {
		t.Errorf("%d lines with %s, want 1; logs:\n%s", n, found, h.logText())
	}
}
