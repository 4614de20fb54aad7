package hostgw

import (
	"fmt"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestPassReadsItsOwnRoutes: a pass reads the main table into the slice of
// the last pass's routes (backend.RouteBuf); not one of those may count as
// the kernel's then. Between passes, every route of ours is deleted, then
// the scope-link route that put the peers on-link, then it is added back:
// each pass acts on the table as it is. A route of the last pass read again
// would hide a deletion (no route added back, the peers still on-link).
func TestPassReadsItsOwnRoutes(t *testing.T) {
	h, segment := newOnLinkByRouteHost(t, t.Context())
	nl := h.ns.Handle
	ext := h.ext.Attrs().Index
	const n = 40
	var peers []subnet.Lease
	for i := range n {
		peers = append(peers, lease(fmt.Sprintf("10.244.%d.0/24", 2+i), fmt.Sprintf("198.18.0.%d", 2+i), Type))
	}
	pass := func(when string, want backend.Result) {
		t.Helper()
		if res := h.reconcile(peers...); res.String() != want.String() {
			t.Fatalf("pass %s: %v, want %v", when, res, want)
		}
	}
	ours := func() []backend.Route {
		t.Helper()
		rs, err := backend.OurRoutes(nl)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}

	pass("from empty", backend.Result{Added: n})
	pass("unchanged", backend.Result{})
	for _, r := range ours() {
		if err := nl.RouteDel(&netlink.Route{Dst: backend.IPNet(r.Dst), LinkIndex: ext, Protocol: backend.RouteProtocol}); err != nil {
			t.Fatal(err)
		}
	}
	pass("after our routes were deleted", backend.Result{Added: n})
	if got := len(ours()); got != n {
		t.Fatalf("%d routes of ours after that pass, want %d", got, n)
	}
	if err := nl.RouteDel(segment); err != nil {
		t.Fatal(err)
	}
	pass("after the segment's route was deleted", backend.Result{Removed: n, Skipped: n})
	if got := len(ours()); got != 0 {
		t.Fatalf("%d routes of ours with the peers off-link, want none", got)
	}
	if err := nl.RouteAdd(segment); err != nil {
		t.Fatal(err)
	}
	pass("after the segment's route was back", backend.Result{Added: n})
	pass("unchanged again", backend.Result{})
}
