package udp

import (
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"golang.org/x/sys/unix"
)

// TestKilledKeeperFoundBySocket: where the keeper's pid cannot be watched
// (no pidfd before Linux 5.3, or no one keeper found by name), nothing
// wakes the backend when it dies, but each Reconcile asks its socket, and
// the first after the death starts a new keeper.
func TestKilledKeeperFoundBySocket(t *testing.T) {
	h, peers := newInheritingHost(t)
	h.b.setKeeperWatch(watchKeeper(0, h.b.poke))
	h.reconcile(peers...)
	if h.logged("the descriptor keeper died") {
		t.Fatal("a live keeper was taken for dead")
	}
	old := h.signalKeeper(unix.SIGKILL)
	// Its socket goes as it exits, just after the signal: as the resync
	// ticker would, Reconcile until it finds it gone.
	deadline := time.Now().Add(10 * time.Second)
	for h.reconcile(peers...); h.keeperRestarts() == 0; h.reconcile(peers...) {
		if time.Now().After(deadline) {
			t.Fatalf("no new keeper 10s after the keeper (pid %d) was killed", old)
		}
		time.Sleep(10 * time.Millisecond)
	}
	h.checkReplaced(old)
	h.restartLosesNothing(peers, 3)
}

// TestKeeperWatchStops: a watch stopped before its process exits returns
// at once and reports nothing; one of a pid that does not exist is dead
// from the start.
func TestKeeperWatchStops(t *testing.T) {
	woke := false
	w := watchKeeper(unix.Getpid(), func() { woke = true })
	if w.poll {
		nstest.Missing(t, "pidfd_open (Linux 5.3)")
	}
	w.stop()
	if woke || w.dead.Load() {
		t.Fatal("a stopped watch reported its (live) process dead")
	}
	if w := watchKeeper(1<<22+1, func() {}); !w.dead.Load() { // above pid_max's limit
		t.Fatal("the watch of a pid that does not exist does not say it is dead")
	}
}
