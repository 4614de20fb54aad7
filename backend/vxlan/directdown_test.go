package vxlan

import (
	"context"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// TestDirectRoutingInterfaceDown: with DirectRouting, while the external
// interface is down the kernel has deleted the direct routes through it
// and refuses them (ENETUNREACH). The pass says so in one error, as
// host-gw's does, not one per route (a thousand peers on the segment made
// a line of some 70 kB, logged at each retry and kept as /status
// lastResyncError), and still programs the encapsulated peers, whose
// routes go through the device. The direct routes come back with the
// interface.
func TestDirectRoutingInterfaceDown(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	nl := h.ns.Handle
	near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	near2 := lease("10.244.4.0/24", "198.18.0.4", "vxlan", "02:00:00:00:00:04")
	far := lease("10.244.3.0/24", "198.19.0.3", "vxlan", "02:00:00:00:00:03")
	h.reconcile(near, near2)
	const direct = "route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\nroute 10.244.4.0/24 via 198.18.0.4 dev ext0 proto 74\n"
	h.check(withBase(direct))

	if err := nl.LinkSetDown(h.ext); err != nil {
		t.Fatal(err)
	}
	const down = "external interface ext0 is down: the kernel took the DirectRouting routes through it away and refuses them until it is up; the routes to 2 peers on its segment are put back then"
	// A peer that joins meanwhile is encapsulated: it gets its FDB entry,
	// neighbour and route through the device at once.
	for i := range 2 {
		res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{near, near2, far})
		if err == nil || err.Error() != down {
			t.Fatalf("Reconcile with the interface down: %v, want %q", err, down)
		}
		h.check(strings.Replace(withBase(peerLines("10.244.3.0/24", "198.19.0.3", "02:00:00:00:00:03")), "link ext0 veth up", "link ext0 veth down", 1))
		if i == 0 && res.String() != (backend.Result{Added: 3}).String() {
			t.Errorf("result %v, want the far peer's 3 objects added", res)
		}
	}

	if err := nl.LinkSetUp(h.ext); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(near, near2, far); res.String() != (backend.Result{Added: 2}).String() {
		t.Errorf("after the interface came back: %v, want the 2 direct routes added", res)
	}
	h.check(withBase(direct + peerLines("10.244.3.0/24", "198.19.0.3", "02:00:00:00:00:03")))
}
