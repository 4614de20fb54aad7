package hostgw

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestShadowedPeerSubnetLogged: a blackhole route for a /26 inside a peer's
// subnet (Calico's, for its IPAM block, left from a migration) takes that
// part of the peer's traffic while the peer's route stays as wanted. The
// pass leaves it alone, and says so once, naming the route and the peer's
// subnet, however many passes find it; and once more when it is gone.
func TestShadowedPeerSubnetLogged(t *testing.T) {
	h := prepared(t)
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	h.reconcile(p2)
	block := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.64/26")), Type: unix.RTN_BLACKHOLE, Protocol: 12}
	if err := h.ns.Handle.RouteAdd(block); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if res := h.reconcile(p2); res.Added+res.Removed+res.Updated != 0 {
			t.Fatalf("a pass changed the kernel (%v); want the blackhole route left alone", res)
		}
	}
	h.check("route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\nroute 10.244.2.64/26 dev #0 proto 12 type 6")
	const found = `"msg"="another route takes part of a peer's subnet" "route"="blackhole 10.244.2.64/26 proto bird" "peerSubnet"="10.244.2.0/24"`
	if n := h.countLogs(found); n != 1 {
		t.Fatalf("%d lines with %s after three passes, want 1; logs:\n%s", n, found, h.logText())
	}
	if err := h.ns.Handle.RouteDel(block); err != nil {
		t.Fatal(err)
	}
	h.reconcile(p2)
	h.reconcile(p2)
	const gone = `"msg"="a route that took part of a peer's subnet no longer does" "route"="blackhole 10.244.2.64/26 proto bird"`
	if n := h.countLogs(gone); n != 1 {
		t.Fatalf("%d lines with %s after the route went, want 1; logs:\n%s", n, gone, h.logText())
	}
}
