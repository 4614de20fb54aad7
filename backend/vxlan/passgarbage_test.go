package vxlan

import (
	"context"
	"fmt"
	"testing"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
)

// TestUnchangedPassGarbage: a pass that finds nothing to do allocates some
// 3 kB per peer (netlink's reading of the route dump, the pass's wants and
// Diff's maps). It allocated 7.3 kB (8.5 kB at 5000 peers: 43 MB per pass,
// GC some 17 % of its CPU): the slices of the route, neighbour and FDB
// dumps grown by append a quarter at a time (five times their final size
// in all), netlink's Neigh for each entry, Diff's five maps per kind, the
// maps of the wants made again though the same, and routes of ours
// converted to be dropped.
func TestUnchangedPassGarbage(t *testing.T) {
	h := newHost(t, `{}`)
	const n = 250
	peers := make([]subnet.Lease, n)
	for i := range peers {
		peers[i] = lease(fmt.Sprintf("10.244.%d.0/24", i+2), fmt.Sprintf("198.18.%d.%d", 1+i/200, 2+i%200), "vxlan",
			fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff))
	}
	ctx := context.Background()
	var garbage [2]uint64
	for i, ps := range [][]subnet.Lease{peers[:1], peers} {
		if res, err := h.b.Reconcile(ctx, h.own, ps); err != nil || res.Skipped != 0 {
			t.Fatalf("Reconcile of %d peers = %v, %v", len(ps), res, err)
		}
		garbage[i] = nstest.PassGarbage(t, h.b, h.own, ps)
	}
	one, all := garbage[0], garbage[1]
	perPeer := (float64(all) - float64(one)) / (n - 1)
	t.Logf("an unchanged pass allocated %d bytes with 1 peer, %d with %d: %.0f bytes per peer", one, all, n, perPeer)
	if perPeer > 4000 {
		t.Errorf("an unchanged pass allocated %.0f bytes per peer; want at most 4000", perPeer)
	}
}
