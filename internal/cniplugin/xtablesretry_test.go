package cniplugin

import (
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// TestAddWaitsXtablesBeforeRetries: an ADD of a container whose
// masquerading is recorded in the network (its DEL could not remove it),
// while another program holds the xtables lock a moment (kube-proxy's
// iptables-restore), waits for the lock before it retries that removal,
// and succeeds once the lock is free. Before, the retry came first: its
// iptables commands wait xtablesWait (1 s) and fail (exit status 4), so the
// ADD failed with code 11 without the wait of waitXtables (5 s) ever being
// reached, and kept masqRetryDir's lock through both, so another such ADD
// could fail after masqLockWait. Here the fake removal fails while the
// lock is held, as iptables does, and ADD's first wait for the lock
// releases it.
func TestAddWaitsXtablesBeforeRetries(t *testing.T) {
	fakeIptables(t, 1, "iptables: No chain/target/match by that name.") // legacy, for waitXtables
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lock)
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	recordMasqFailures(t, f, "c1")
	releaseLock := holdLock(t, lock)
	held := true
	errHeld := errors.New("Another app is currently holding the xtables lock. Stopped waiting after 1s.")
	f.masq.during = func() {
		f.masq.err = nil
		if held {
			f.masq.err = errHeld
		}
	}
	f.onSleep = func(int) {
		releaseLock()
		held = false
		f.onSleep = nil
	}
	f.masq.removeCalls = nil
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD c1, the xtables lock held a moment: %v; want it to wait for the lock, then retry its record", err)
	}
	if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("chains removed %q, want %q", f.masq.removed, want)
	}
	if names := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)); len(names) != 0 {
		t.Errorf("%s holds %q, want nothing", masqRetryDir, names)
	}
}
