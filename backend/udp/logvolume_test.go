package udp

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestForwardingTableQuietAtV0: the forwarding table's changes are logged
// an entry a line at V(2) only, and counted in the Result, which the agent
// sums at V(0) with the other backends' kernel changes: a line per entry
// would grow with the cluster (a cold start with many peers, churn).
func TestForwardingTableQuietAtV0(t *testing.T) {
	h := newTestHost(t)
	peers := func(from, to int) []subnet.Lease {
		var ls []subnet.Lease
		for i := from; i < to; i++ {
			ls = append(ls, lease(fmt.Sprintf("10.244.%d.0/24", i), fmt.Sprintf("198.18.1.%d", i), Type))
		}
		return ls
	}
	// take returns the forwarding table lines logged since the last call,
	// at V(0) and at V(2).
	take := func() (v0, v2 []string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, l := range h.logs {
			switch {
			case !strings.Contains(l, `"forwarding table `):
			case strings.Contains(l, `"level"=0`):
				v0 = append(v0, l)
			case strings.Contains(l, `"level"=2`):
				v2 = append(v2, l)
			}
		}
		h.logs = nil
		return v0, v2
	}
	// A cold start with 40 peers, then 5 leave and 5 join.
	if res := h.reconcile(peers(2, 42)...); res.Added < 40 {
		t.Fatalf("40 peers: %v, want the 40 entries counted", res)
	}
	if v0, v2 := take(); len(v0) != 0 || len(v2) != 40 {
		t.Errorf("40 peers: %d lines at V(0) and %d at V(2), want 0 and 40:\n%s", len(v0), len(v2), strings.Join(v0, "\n"))
	}
	if res := h.reconcile(peers(7, 47)...); res.Added != 5 || res.Removed != 5 {
		t.Fatalf("5 joins and 5 leaves: %v, want added=5 removed=5", res)
	}
	if v0, v2 := take(); len(v0) != 0 || len(v2) != 10 {
		t.Errorf("5 joins and 5 leaves: %d lines at V(0) and %d at V(2), want 0 and 10:\n%s", len(v0), len(v2), strings.Join(v0, "\n"))
	}
}
