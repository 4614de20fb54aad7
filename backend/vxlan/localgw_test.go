package vxlan

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLocalRouteGatewaySkipped: a route of the local table that makes a
// peer's <subnet>.0 an address of this host with no address in that subnet
// (AnyIP: `ip route add local 10.244.2.0/23 dev lo`) makes the kernel
// refuse the peer's route through flannel.1 (EINVAL, "Nexthop has invalid
// gateway"). Before, every pass failed so, again and again, and programmed
// those peers' FDB entries and neighbours; now the peers are skipped with a
// reason naming the route, logged once, the pass succeeds and programs the
// others, and once the route goes Watch wakes a pass that programs them.
func TestLocalRouteGatewaySkipped(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	lo := h.link("lo")
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	anyIP := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/23")), LinkIndex: lo.Attrs().Index,
		Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST, Protocol: unix.RTPROT_STATIC}
	if err := nl.RouteAdd(anyIP); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	p4 := lease("10.244.4.0/24", "198.18.0.4", "vxlan", "02:00:00:00:00:04")
	peers := []subnet.Lease{p2, p3, p4}
	for pass := 1; pass <= 2; pass++ {
		res, err := h.b.Reconcile(context.Background(), h.own, peers)
		if err != nil {
			t.Fatalf("pass %d with 10.244.2.0/23 local: %v; want p2 and p3 skipped, no error", pass, err)
		}
		want := backend.Result{Added: 4, Skipped: 2} // the address, p4's three
		if pass > 1 {
			want = backend.Result{Skipped: 2}
		}
		if res.String() != want.String() {
			t.Errorf("pass %d: %v, want %v", pass, res, want)
		}
		h.check(withBase(peerLines("10.244.4.0/24", "198.18.0.4", "02:00:00:00:00:04")))
	}
	for _, p := range []subnet.Lease{p2, p3} {
		gw := p.Subnet.Addr()
		once := fmt.Sprintf(`"lease"=%q "reason"="its gateway %s is this host's by the route `+"`local 10.244.2.0/23 dev lo proto static`"+
			`: the kernel refuses a route through it"`, p.Key(), gw)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s; logs:\n%s", n, once, h.logText())
		}
	}
	wakes, stop := h.watch(t)
	defer stop()
	if err := nl.RouteDel(anyIP); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitWake(t, wakes, "local route deleted")
	if res := h.reconcile(peers...); res.String() != (backend.Result{Added: 6}).String() {
		t.Errorf("pass with the local route gone: %v, want p2's and p3's three entries each added", res)
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") +
		peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03") + peerLines("10.244.4.0/24", "198.18.0.4", "02:00:00:00:00:04")))
}
