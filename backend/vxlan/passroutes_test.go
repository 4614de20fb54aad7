package vxlan

import (
	"fmt"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestPassReadsItsOwnRoutes: a pass reads the main table into the slice of
// the last pass's routes (backend.RouteBuf); not one of those may count as
// the kernel's then. Every route of ours deleted between two passes is
// added back by the second, and a third changes nothing: a route of the
// last pass read again would hide the deletion.
func TestPassReadsItsOwnRoutes(t *testing.T) {
	h := newHost(t, `{}`)
	const n = 40
	var peers []subnet.Lease
	for i := range n {
		peers = append(peers, lease(fmt.Sprintf("10.244.%d.0/24", 2+i), fmt.Sprintf("198.18.0.%d", 2+i), "vxlan", fmt.Sprintf("02:00:00:00:00:%02x", 2+i)))
	}
	pass := func(when string, want backend.Result) {
		t.Helper()
		if res := h.reconcile(peers...); res.String() != want.String() {
			t.Fatalf("pass %s: %v, want %v", when, res, want)
		}
	}
	ours := func() []backend.Route {
		t.Helper()
		rs, err := backend.OurRoutes(h.ns.Handle)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}

	h.reconcile(peers...)
	pass("unchanged", backend.Result{})
	for _, r := range ours() {
		if err := h.ns.Handle.RouteDel(&netlink.Route{Dst: backend.IPNet(r.Dst), LinkIndex: r.LinkIndex, Protocol: backend.RouteProtocol}); err != nil {
			t.Fatal(err)
		}
	}
	pass("after our routes were deleted", backend.Result{Added: n})
	if got := len(ours()); got != n {
		t.Fatalf("%d routes of ours after that pass, want %d", got, n)
	}
	pass("unchanged again", backend.Result{})
}
