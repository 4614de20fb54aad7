package cniplugin

import (
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestAddXtablesWaitAfterRetriesHoldsNoLock: an ADD of a container with
// masquerading recorded in the network (its DEL could not remove it) waits
// for the xtables lock a second time after its retries, next to the
// delegate (another program took the lock during them). Another such ADD
// meanwhile takes the retry lock at once and succeeds. Before, the first
// kept masqRetryDir's lock through that wait (up to delegateXtablesWait,
// 5 s), so the second, which waits masqLockWait (5 s) at most for it,
// failed with code 11 ("another agentd-cni command still holds the lock
// of …/_masq-retry after 5s"), as the first wait did before 54a1ade and
// de3c3ea.
func TestAddXtablesWaitAfterRetriesHoldsNoLock(t *testing.T) {
	fakeIptables(t, 1, "iptables: No chain/target/match by that name.") // legacy, for waitXtables
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lock)
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	recordMasqFailures(t, f, "c1", "c2")
	// c1's ADD removes its own record; c2's removal fails for it (the
	// xtables lock), so that c2's record stays and c2's ADD waits for
	// the retry lock.
	f.masq.err = nil
	f.masq.stuck, f.masq.stuckKey = errors.New("xtables lock"), "cbr0 c2"
	// Another program takes the xtables lock during c1's retries.
	var releaseLock func()
	f.masq.during = func() {
		if releaseLock == nil {
			releaseLock = holdLock(t, lock)
		}
	}
	var addErr2 error
	added2 := false
	f.onSleep = func(int) {
		// c1's ADD waits for the xtables lock after its retries; the
		// other program lets go of it, and c2's ADD runs, on a clock of
		// its own whose sleeps take no time.
		f.onSleep = nil
		releaseLock()
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec, p.masq = &fakeExec{}, &fakeMasq{}
		now := f.now
		p.now = func() time.Time { return now }
		p.sleep = func(d time.Duration) { now = now.Add(d) }
		addErr2, added2 = p.Add(f.args("c2", "")), true
	}
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD c1: %v", err)
	}
	if !added2 {
		t.Fatal("ADD c1 did not wait for the xtables lock after its retries: the test shows nothing")
	}
	if addErr2 != nil {
		t.Errorf("ADD c2 while ADD c1 waited for the xtables lock after its retries: %v; want it to take the retry lock and succeed", addErr2)
	}
	if names, want := fileNames(t, f.dataDir), []string{masqRetryDir, "c1", "c2", "cbr0:c1:eth0", "cbr0:c2:eth0"}; !slices.Equal(names, want) {
		t.Errorf("dataDir holds %q, want %q", names, want)
	}
	if names := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)); len(names) != 0 {
		t.Errorf("%s holds %q, want nothing: each ADD removes its container's masquerading first", masqRetryDir, names)
	}
}
