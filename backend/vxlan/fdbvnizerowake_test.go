package vxlan

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
)

// TestFDBVNIZeroWakes: a peer's FDB entry on flannel.1 changed by someone
// else to VNI 0 (`bridge fdb replace <peer VtepMAC> dev flannel.1 dst <peer>
// vni 0 self permanent`) wakes Watch, so the pass it wakes sets the entry
// back within 2 s, with no resync ticker at all (nstest.RunPasses). Before,
// the event looked like the echo of our own write (netlink reads NDA_VNI 0
// as no NDA_VNI: the device's VNI) and woke nothing, so the peer's traffic
// left with VNI 0, which its flannel.1 drops, until the next resync.
func TestFDBVNIZeroWakes(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	const ours = "02:00:00:00:00:02 dst 198.18.0.2 self permanent\n"
	// The first pass before Watch runs: its own writes' events wake nothing
	// anyway, but must not be what repairs the entry below.
	h.reconcile(p2)
	if got := h.fdbShow(); got != ours {
		t.Fatalf("bridge fdb show:\n%swant:\n%s", got, ours)
	}
	wakes, _ := h.watch(t)
	var fdbFixed atomic.Int32
	nstest.RunPasses(t, wakes, func() error {
		res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2})
		fdbFixed.Add(int32(res.ByKind["fdb"]))
		return err
	})
	h.bridge("fdb", "replace", "02:00:00:00:00:02", "dev", "flannel.1", "dst", "198.18.0.2", "vni", "0", "self", "permanent")
	nstest.Await(t, 2*time.Second, "the peer's FDB entry set back from VNI 0 by a pass Watch woke", func() error {
		if n := fdbFixed.Load(); n != 1 {
			return fmt.Errorf("%d FDB entries repaired, want 1", n)
		}
		if got := h.fdbShow(); got != ours {
			return fmt.Errorf("bridge fdb show:\n%swant:\n%s", got, ours)
		}
		return nil
	})
}
