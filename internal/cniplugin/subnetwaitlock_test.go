package cniplugin

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestAddWaitForSubnetEnvHoldsNoLock: at a node's boot the runtime starts
// pods before agentd has written subnet.env, and each ADD waits for it
// (waitSubnetEnv). Two ADDs of containers with masquerading recorded in the
// network (from DELs before the reboot) both wait, and both succeed once
// subnet.env is there. Before, the first took masqRetryDir's lock for its
// retries and kept it while it waited for subnet.env, up to subnetFileWait
// (30 s), so the second, which waits masqLockWait (5 s) at most for that
// lock, failed with code 11 while subnet.env was still missing.
func TestAddWaitForSubnetEnvHoldsNoLock(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	recordMasqFailures(t, f, "c1", "c2")
	f.masq.err = nil
	if err := os.Remove(f.subnetFile); err != nil {
		t.Fatal(err)
	}

	// Each ADD runs on a clock of its own whose sleeps take no time until
	// it has waited past masqLockWait (so that a wait for the lock would
	// have given up); it then says so on waiting and stops until
	// subnet.env is written.
	written := make(chan struct{})
	add := func(id string, masq *fakeMasq, waiting chan<- struct{}) <-chan error {
		done := make(chan error, 1)
		go func() {
			p := *f.p
			p.Stdout, p.Stderr = io.Discard, io.Discard
			p.Exec, p.masq = &fakeExec{}, masq
			start := f.now
			now := start
			var once sync.Once
			p.now = func() time.Time { return now }
			p.sleep = func(d time.Duration) {
				now = now.Add(d)
				if now.Sub(start) > masqLockWait {
					once.Do(func() {
						waiting <- struct{}{}
						<-written
					})
					// From here on both ADDs go on at once: a
					// wait for the other's lock takes real time.
					time.Sleep(d)
				}
			}
			done <- p.Add(f.args(id, ""))
		}()
		return done
	}
	waiting := make(chan struct{})
	// c1's ADD retries c2's record too, and fails to remove it (the
	// xtables lock taken by kube-proxy for a moment), so c2's stays.
	added1 := add("c1", &fakeMasq{stuck: errors.New("xtables lock"), stuckKey: "cbr0 c2"}, waiting)
	select {
	case <-waiting:
	case err := <-added1:
		t.Fatalf("ADD c1 without subnet.env returned %v before waiting for it", err)
	}
	added2 := add("c2", &fakeMasq{}, waiting)
	select {
	case <-waiting:
	case err := <-added2:
		f.writeEnv(t, envA)
		close(written)
		<-added1
		t.Fatalf("ADD c2, while ADD c1 waited for subnet.env: %v; want it waiting for subnet.env too", err)
	}
	f.writeEnv(t, envA)
	close(written)
	for id, added := range map[string]<-chan error{"c1": added1, "c2": added2} {
		if err := <-added; err != nil {
			t.Errorf("ADD %s once subnet.env was written: %v", id, err)
		}
	}
	if names, want := fileNames(t, f.dataDir), []string{masqRetryDir, "c1", "c2", "cbr0:c1:eth0", "cbr0:c2:eth0"}; !slices.Equal(names, want) {
		t.Errorf("dataDir holds %q, want %q", names, want)
	}
	if names := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)); len(names) != 0 {
		t.Errorf("%s holds %q, want nothing: each ADD removes its container's masquerading first", masqRetryDir, names)
	}
}
