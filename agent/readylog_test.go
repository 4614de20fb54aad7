package agent

import (
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestFirstSnapshotLoggedBeforeReady: the pass that programs the first peer
// snapshot, the last condition of readiness here, logs so before /readyz
// says ready: whoever sees the agent ready finds the line. It was logged
// just after, so a reader of /readyz, then of the log, could miss it.
func TestFirstSnapshotLoggedBeforeReady(t *testing.T) {
	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	h, _ := testHealth(t)
	a := &agent{cfg: Config{ResyncInterval: time.Hour}, log: log, health: h, obs: newObserver(), iptDone: true}
	_, _, ctx := runReconcileLoop(t, a)
	if err := cluster.Eventually(ctx, 10*time.Second, a.readyErr); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("first peer snapshot programmed"); n != 1 {
		t.Errorf("ready, with %d lines saying the first peer snapshot is programmed, want 1: %q", n, logs.get())
	}
}
