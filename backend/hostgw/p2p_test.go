package hostgw

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestPeerSubnetIsPointToPointPeer: a point-to-point address (a tunnel's:
// `ip addr add 198.19.9.1 peer 10.244.9.0/24 dev tun0`) gives the kernel a
// route to its peer network, which no address of ours lies in. A lease for
// that subnet is skipped like one holding an address of ours: our route
// would replace the kernel's (a replace takes whatever route is first under
// the key), and deleting ours when the lease goes would leave the tunnel's
// network with no route. Added while our route stands, the kernel's route
// goes behind ours, and the next pass deletes ours.
func TestPeerSubnetIsPointToPointPeer(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	network := netip.MustParsePrefix("10.244.9.0/24")
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	bad := lease("10.244.9.0/24", "198.18.0.3", Type)
	h.reconcile(p2, bad)

	tun := h.ns.AddVeth(t, "tun0", "tun1", netip.Prefix{})
	if err := nl.AddrAdd(tun, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.9.1/32")), Peer: backend.IPNet(network)}); err != nil {
		t.Fatal(err)
	}
	kernelRoute := func(when string) { t.Helper(); onlyKernelRoute(t, nl, network, tun, when) }
	res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, bad})
	if err != nil || res.String() != (backend.Result{Removed: 1, Skipped: 1}).String() {
		t.Errorf("Reconcile after the address came = %v, %v; want 1 removed, 1 skipped, no error", res, err)
	}
	kernelRoute("after the address came")
	once := fmt.Sprintf(`"lease"=%q "reason"="subnet 10.244.9.0/24 is the peer network of 198.19.9.1, a point-to-point address of this host (tun0)"`, bad.Key())
	if n := h.countLogs(once); n != 1 {
		t.Errorf("logged %d times, want once: %s", n, once)
	}
	if res := h.reconcile(p2, bad); res.Changed() {
		t.Errorf("second pass changed %v", res)
	}
	kernelRoute("with the lease")
	h.reconcile(p2)
	kernelRoute("after the lease went")
	// The lease comes again while the kernel's route stands alone.
	h.reconcile(p2, bad)
	kernelRoute("when the lease came again")
	h.reconcile(p2)
	kernelRoute("after it went again")
}
