package nstest

import (
	"context"
	"runtime"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// PassGarbage runs one Reconcile of b with own and peers, which must find
// nothing to do, and returns the bytes the process allocated meanwhile
// (nothing else should run).
func PassGarbage(t testing.TB, b backend.Backend, own subnet.Lease, peers []subnet.Lease) uint64 {
	t.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := b.Reconcile(context.Background(), own, peers)
	runtime.ReadMemStats(&after)
	if err != nil || res.Changed() {
		t.Fatalf("Reconcile = %v, %v; want no change", res, err)
	}
	return after.TotalAlloc - before.TotalAlloc
}
