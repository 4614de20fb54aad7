package hostgw

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestPassBeforeWatchIgnoresServiceAddrs: an unchanged pass before Watch
// runs (the agent's first ones, which race Watch's start), or of a backend
// whose Watch never runs, costs no more with kube-proxy's Service
// addresses on kube-ipvs0 than without. Only Watch subscribed to the
// address events, so these passes read every address of the host (some
// 200 bytes each); Prepare now subscribes (backend.SegmentReader.Hold),
// and Watch goes on with that subscription.
func TestPassBeforeWatchIgnoresServiceAddrs(t *testing.T) {
	const services = 5000
	h := prepared(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type)}
	h.reconcile(peers...) // the first pass dumps every address
	bare := nstest.PassGarbage(t, h.b, h.own, peers)
	// kube-proxy in IPVS mode holds a /32 per Service's cluster IP on its
	// dummy device kube-ipvs0 (a veth here: the test kernel may lack
	// dummy). Nothing is sent to them.
	ipvs := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}, PeerName: "kube-ipvs0p"}
	if err := h.ns.Handle.LinkAdd(ipvs); err != nil {
		t.Fatal(err)
	}
	for i := range services {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		if err := h.ns.Handle.AddrAdd(ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	h.reconcile(peers...) // their events, or a dump if the kernel dropped some
	loaded := nstest.PassGarbage(t, h.b, h.own, peers)
	perAddr := (float64(loaded) - float64(bare)) / services
	t.Logf("a pass before Watch allocated %d bytes with no service address, %d with %d: %.0f bytes per service address", bare, loaded, services, perAddr)
	if perAddr > 50 {
		t.Errorf("a pass before Watch allocated %.0f bytes per service address on kube-ipvs0 (%d addresses); want under 50: it reads every address of the host",
			perAddr, services)
	}
}
