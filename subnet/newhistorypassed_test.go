package subnet_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestNewHistoryFoundByReadPassedBeforeList: the read after a reconnect
// finds etcd restored from an older snapshot (its revision below the one the
// watch saw), and before the list that follows, 200 ms later, writes of the
// new history take its revision past that one: another agent's key written
// again, as every agent that finds the new history writes its own. The list
// is still of the new history: the peers whose keys the snapshot lacks keep
// their routes for the grace, and the line says that etcd lost its history.
// Before, the list judged by its revision alone took the history for the
// same: those peers went at once, their routes with them (on the namespace
// cluster, h2 and h3 listed the new history with no "ETCD LOST ITS HISTORY"
// line after h4 had written its key again), until their agents, each when
// its own connection to etcd comes back, wrote their keys again.
func TestNewHistoryFoundByReadPassedBeforeList(t *testing.T) {
	t.Parallel()
	const grace = 30 * time.Second
	r := startRestartable(t, 0)
	e := r.env(net16)
	ctx := context.Background()

	// The writes of the new history, made when the watch has ended on
	// the read's finding and before the list: the log line comes between.
	var mu sync.Mutex
	var lines []string
	var bump func()
	var bumpOnce sync.Once
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		lines = append(lines, prefix+" "+args)
		b := bump
		mu.Unlock()
		if b != nil && strings.Contains(args, "lease watch ended") && strings.Contains(args, "history was replaced") {
			bumpOnce.Do(b)
		}
	}, funcr.Options{Verbosity: 2})

	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
		c.NewHistoryGrace = grace
		c.Logger = log
	})
	acquire(t, a)
	returned := runWatched(t, a)
	<-a.PeersSynced()
	snap := r.snapshot(e.cli)

	// Peers that lease after the snapshot, whose agents have not found
	// the new history yet.
	putLeased(t, e.cli, "10.244.2.0-24", 2)
	putLeased(t, e.cli, "10.244.3.0-24", 3)
	for _, sn := range []string{"10.244.2.0/24", "10.244.3.0/24"} {
		waitPeer(t, a, sn, "peer "+sn+" seen")
	}
	seen, err := e.cli.Get(ctx, prefix+"/config")
	if err != nil {
		t.Fatal(err)
	}

	r.restore(snap, 0)
	cli := r.client()
	mu.Lock()
	bump = func() {
		for {
			resp, err := cli.Put(ctx, "/elsewhere/bump", "x")
			if err != nil {
				t.Errorf("bump the revision: %v", err)
				return
			}
			if resp.Header.Revision >= seen.Header.Revision {
				return
			}
		}
	}
	mu.Unlock()

	// The list after the watch ended: its V(2) line comes once the
	// table is the list.
	listedAfterEnd := func() bool {
		mu.Lock()
		defer mu.Unlock()
		ended := false
		for _, l := range lines {
			ended = ended || strings.Contains(l, "lease watch ended")
			if ended && strings.Contains(l, "listed leases") {
				return true
			}
		}
		return false
	}
	eventuallyWithin(t, 30*time.Second, "a lists the new history", func() error {
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
		if !listedAfterEnd() {
			return errors.New("not yet")
		}
		return nil
	})
	if got, want := peerSubnets(a), "10.244.2.0/24@198.18.0.2 10.244.3.0/24@198.18.0.3"; got != want {
		t.Errorf("peers right after the list of the new history: %q, want %q (kept for the grace)", got, want)
	}
	mu.Lock()
	defer mu.Unlock()
	var ended, lost []string
	for _, l := range lines {
		if strings.Contains(l, "lease watch ended") {
			ended = append(ended, l)
		}
		if strings.Contains(l, "ETCD LOST ITS HISTORY") {
			lost = append(lost, l)
		}
	}
	if len(ended) == 0 || !strings.Contains(ended[0], "history was replaced") {
		t.Fatalf("the watch did not end on the new history: %q", ended)
	}
	if len(lost) != 1 || !strings.Contains(lost[0], `"kept"="10.244.2.0/24 10.244.3.0/24"`) {
		t.Errorf("lines saying etcd lost its history: %q, want one keeping both peers", lost)
	}
}
