package cniplugin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestMasqRemovalRetriedByLaterCommands: a masquerade chain whose removal
// after the delegate's DEL failed is removed by the next ADD, DEL or GC of
// any container, in a 1.0.0 network too, where no GC ever comes
// (containerd 1.7). Before, only a GC retried it, and only when the
// attachment had a saved configuration to keep: after a DEL with nothing
// saved (a wiped dataDir, the teardown of an ADD that failed before it
// saved), or in a network no GC reaches, the chain stayed for good, to
// masquerade the next pod given the address, its traffic to other hosts'
// pods included.
func TestMasqRemovalRetriedByLaterCommands(t *testing.T) {
	for _, tc := range []struct {
		name  string
		saved bool // the attachment has a saved configuration
		next  string
	}{
		{"nothing saved, next ADD", false, "ADD"},
		{"nothing saved, next DEL", false, "DEL"},
		{"nothing saved, next GC", false, "GC"},
		{"saved, next ADD", true, "ADD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envA)
			live := liveNetns(t, f)
			f.masq.chains = map[string]bool{"cbr0 c1": true}
			if tc.saved {
				if err := f.p.Add(f.args("c1", "")); err != nil {
					t.Fatal(err)
				}
			}
			f.masq.err = errors.New("delete masquerade chain CNI-x: xtables lock")
			a := f.args("c1", "")
			a.Netns = "" // the sandbox's namespace closed
			if err := f.p.Del(a); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if !strings.Contains(f.errOut.String(), "DEL of container c1 interface eth0 in network cbr0: delete masquerade chain CNI-x: xtables lock") {
				t.Errorf("stderr %q", f.errOut.String())
			}

			f.masq.err = nil
			var err error
			switch tc.next {
			case "ADD":
				err = f.p.Add(f.args("c2", ""))
			case "DEL":
				a := f.args("c3", "")
				a.Netns = live
				err = f.p.Del(a)
			case "GC":
				err = f.p.GC(asV110(f.args("c3", `,"cni.dev/valid-attachments":[]`)))
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.next, err)
			}
			if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
				t.Errorf("after the next %s the chains of %q were removed, want %q", tc.next, f.masq.removed, want)
			}
			if got := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)); len(got) != 0 {
				t.Errorf("after the chain's removal %s holds %q", masqRetryDir, got)
			}
			// Removed once: later commands find nothing to retry.
			a = f.args("c4", "")
			a.Netns = live
			if err := f.p.Del(a); err != nil {
				t.Fatal(err)
			}
			if len(f.masq.removed) != 1 {
				t.Errorf("chains removed %q, want only c1's, once", f.masq.removed)
			}
		})
	}
}

// TestMasqRetryOrder: while the chains still cannot be removed, a later
// command tries its own container's first, then the others' until one
// fails (each may wait for the xtables lock), the least recently tried
// first, and succeeds; an ADD whose
// own container's chain, left by an earlier DEL of it, cannot be removed
// fails, since its delegate would make that chain again (same name) and a
// later retry remove it under the running pod.
func TestMasqRetryOrder(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	recordMasqFailures(t, f, "c1", "c2")
	f.masq.removeCalls = nil
	a := f.args("c3", "")
	a.Netns = liveNetns(t, f)
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	// c1's or c2's: c1's failed retry in c2's DEL may have put it after
	// c2's record (see recordsByAge).
	if len(f.masq.removeCalls) != 1 || (f.masq.removeCalls[0] != "cbr0 c1" && f.masq.removeCalls[0] != "cbr0 c2") {
		t.Fatalf("DEL of c3 tried to remove the chains of %q, want c1's or c2's (stop at the first failure)", f.masq.removeCalls)
	}
	tried := strings.TrimPrefix(f.masq.removeCalls[0], "cbr0 ")
	if !strings.Contains(f.errOut.String(), "remove masquerading of container "+tried+" interface eth0 in network cbr0, left by its DEL: xtables lock") {
		t.Errorf("stderr %q", f.errOut.String())
	}
	f.masq.removeCalls = nil
	err := f.p.Add(f.args("c2", ""))
	if err == nil || !strings.Contains(err.Error(), "remove masquerading of container c2 interface eth0 in network cbr0, left by its DEL: xtables lock") {
		t.Errorf("ADD of c2 with its old chain left: %v", err)
	}
	if want := []string{"cbr0 c2"}; !slices.Equal(f.masq.removeCalls, want) {
		t.Errorf("ADD of c2 tried to remove the chains of %q, want %q", f.masq.removeCalls, want)
	}
	if len(f.exec.calls) != 3 {
		t.Errorf("delegate runs %d, want the 3 DELs (no ADD)", len(f.exec.calls))
	}
	f.masq.err = nil
	if err := f.p.Add(f.args("c2", "")); err != nil {
		t.Fatal(err)
	}
	if want := []string{"cbr0 c2", "cbr0 c2", "cbr0 c1"}; !slices.Equal(f.masq.removeCalls, want) {
		t.Errorf("ADD of c2 tried to remove the chains of %q, want %q", f.masq.removeCalls, want)
	}
}

// liveNetns is a file standing for a pod's network namespace that is still
// there: DEL leaves the masquerade chain to the delegate.
func liveNetns(t *testing.T, f *fixture) string {
	t.Helper()
	live := filepath.Join(f.dir, "netns")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return live
}

// TestMasqRetryNotStuck: a recorded chain whose removal fails for good (a
// rule of another program's still jumps to it) does not keep the others
// from being retried. Before, each command stopped at the first failure in
// the directory's order, which does not change: the same record came first
// and failed every time, and the chains recorded after it stayed for good,
// masquerading the next pods given their addresses.
func TestMasqRetryNotStuck(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	live := liveNetns(t, f)
	recordMasqFailures(t, f, "c1", "c2", "c3")
	f.masq.err = nil
	f.masq.stuck = errors.New("chain in use")
	for i := range 3 {
		a := f.args(fmt.Sprintf("d%d", i), "")
		a.Netns = live
		if err := f.p.Del(a); err != nil {
			t.Fatal(err)
		}
	}
	got := fileNames(t, filepath.Join(f.dataDir, masqRetryDir))
	if want := []string{"cbr0:" + strings.TrimPrefix(f.masq.stuckKey, "cbr0 ") + ":eth0"}; !slices.Equal(got, want) {
		t.Errorf("after 3 more DELs, with %q's chain stuck, %s holds %q, want %q (tried: %q)", f.masq.stuckKey, masqRetryDir, got, want, f.masq.removeCalls)
	}
}

// TestMasqRetryDoesNotQueue: while one command retries the recorded
// masquerade removals (each iptables call may wait a second for the
// xtables lock that kube-proxy holds), an ADD of another container goes on
// without them: the command retrying takes them, and a later one those it
// leaves. Before, every ADD, DEL and GC of the node waited in turn for the
// directory's lock, each then failing the same retry: N pods started
// together waited N times as long, pods that need no iptables included.
// An ADD whose own attachment is recorded still waits (TestMasqRetryOrder).
func TestMasqRetryDoesNotQueue(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	recordMasqFailures(t, f, "c1")

	release, retrying := holdRetry(t, f)
	added := make(chan error, 1)
	go func() {
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec = &fakeExec{}
		p.masq = &fakeMasq{err: errors.New("xtables lock")}
		added <- p.Add(f.args("c3", ""))
	}()
	const limit = 10 * time.Second
	select {
	case err := <-added:
		if err != nil {
			t.Errorf("ADD of c3: %v", err)
		}
		close(release)
	case <-time.After(limit):
		t.Errorf("ADD of c3 still waited for another command's retries after %v", limit)
		close(release)
		<-added
	}
	if err := <-retrying; err != nil {
		t.Errorf("DEL of c2: %v", err)
	}
}

// TestMasqRetryAddWaitsForContainersChain: an ADD of a second interface
// of a container whose first one's masquerading another command is
// retrying waits for that retry. The iptables chain is the container's in
// the network, shared by its interfaces: an ADD going on would have bridge
// make (or keep) the chain while the retry, which found no attachment of
// the container saved, removes it under the running pod. Not waiting for
// other containers' retries (TestMasqRetryDoesNotQueue) must not skip
// this one.
func TestMasqRetryAddWaitsForContainersChain(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	recordMasqFailures(t, f, "c1")

	release, retrying := holdRetry(t, f)
	added := make(chan error, 1)
	go func() {
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec = &fakeExec{}
		p.masq = &fakeMasq{}
		// The real clock: with the fixture's, whose sleeps take no time,
		// ADD would give up waiting (masqLockWait) at once.
		p.now, p.sleep = nil, nil
		added <- p.Add(f.attach("cbr0", "c1", "net1", ""))
	}()
	// Nothing shows that ADD waits but its not returning: it has a second
	// (less than masqLockWait) to return while the retry is held, and
	// must not.
	select {
	case err := <-added:
		close(release)
		t.Fatalf("ADD of c1 net1 returned (%v) while a retry of c1 eth0's chain was held", err)
	case <-time.After(time.Second):
	}
	close(release)
	if err := <-added; err != nil {
		t.Errorf("ADD of c1 net1: %v", err)
	}
	if err := <-retrying; err != nil {
		t.Errorf("DEL of c2: %v", err)
	}
}

// holdingMasq is a fakeMasq whose first Remove of the chain hold
// ("<network> <container ID>") says so on removing, then waits for finish:
// a retry of another command in progress.
type holdingMasq struct {
	fakeMasq
	hold     string
	removing chan<- struct{}
	finish   <-chan struct{}
	held     bool
}

func (m *holdingMasq) Remove(network, containerID, ifName string, chain bool) error {
	if !m.held && network+" "+containerID == m.hold {
		m.held = true
		m.removing <- struct{}{}
		<-m.finish
	}
	return m.fakeMasq.Remove(network, containerID, ifName, chain)
}

// TestMasqRetryNotBetweenAddAndSave: an ADD of a container with another
// interface's masquerading recorded in the network keeps the retries
// locked from its own until it has saved. A retry in between found no
// attachment of the container saved and removed the container's iptables
// chain; run while the ADD saves and its delegate makes or keeps the
// chain, it could remove it under the running pod. The ADD lets go of the
// lock while it waits for the xtables lock after its retries (see
// TestAddXtablesWaitAfterRetriesHoldsNoLock), and takes it again before it
// saves, waiting for another command's retry that took it meanwhile. Here
// a DEL's retry of c1's eth0 record is still removing when the ADD of c1's
// net1 has its xtables lock: nothing is saved for net1 until that removal
// has ended. (Until 2026-12-06 the lock was held through that wait, which
// this test used as the window, checking that no retry ran in it; earlier
// still the window was ADD's wait for a missing subnet.env, which now
// comes before the retries: TestAddWaitForSubnetEnvHoldsNoLock.)
func TestMasqRetryNotBetweenAddAndSave(t *testing.T) {
	fakeIptables(t, 1, "iptables: No chain/target/match by that name.") // legacy, for waitXtables
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lock)
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	recordMasqFailures(t, f, "c1")
	// ADD's retry of c1's eth0 record fails (f.masq.err, the xtables
	// lock): the record stays for the DEL. Another program takes the
	// xtables lock during that retry.
	var releaseLock func()
	f.masq.during = func() {
		if releaseLock == nil {
			releaseLock = holdLock(t, lock)
		}
	}
	removing, finish := make(chan struct{}), make(chan struct{})
	finished := sync.OnceFunc(func() { close(finish) })
	defer finished()
	delDone := make(chan error, 1)
	dm := &holdingMasq{hold: "cbr0 c1", removing: removing, finish: finish}
	waited, savedEarly := false, false
	state := 0
	f.onSleep = func(int) {
		switch state {
		case 0:
			// ADD waits for the xtables lock. Another pod's DEL
			// retries c1's eth0 record and is still removing it when
			// the other program lets go of the lock.
			state++
			d := *f.p
			d.Stdout, d.Stderr = io.Discard, io.Discard
			d.Exec, d.masq = &fakeExec{}, dm
			d.now, d.sleep = time.Now, func(time.Duration) {}
			a := f.args("c2", "")
			a.Netns = ""
			go func() { delDone <- d.Del(a) }()
			select {
			case <-removing:
			case err := <-delDone:
				t.Errorf("DEL c2 returned (%v) without retrying c1's eth0 record: ADD kept the retry lock while it waited for the xtables lock", err)
				state = 2
			}
			releaseLock()
		case 1:
			// ADD waits for the retry lock again.
			state++
			waited = true
			_, err := os.Stat(filepath.Join(f.dataDir, "cbr0:c1:net1"))
			savedEarly = err == nil
			finished()
			if err := <-delDone; err != nil {
				t.Errorf("DEL c2: %v", err)
			}
		}
	}
	if err := f.p.Add(f.attach("cbr0", "c1", "net1", "")); err != nil {
		t.Fatalf("ADD c1 net1: %v", err)
	}
	if state == 0 {
		t.Fatal("ADD did not wait for the xtables lock after its retries: the test shows nothing")
	}
	if !waited {
		t.Error("ADD did not wait for the retry lock, taken by a DEL's retry, before its save")
	}
	if savedEarly {
		t.Error("ADD saved while a DEL's retry of the container's record held the retry lock")
	}
	// Its retry of c1's eth0 record, then its own chain.
	if want := []string{"cbr0 c1", "cbr0 c2"}; !slices.Equal(dm.removed, want) {
		t.Errorf("DEL c2 removed the chains of %q, want %q", dm.removed, want)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "cbr0:c1:net1")); err != nil {
		t.Errorf("ADD saved nothing: %v", err)
	}
}

// recordMasqFailures has DEL of each of ids' eth0 in cbr0, without the pod's
// namespace, fail to remove its masquerading (the xtables lock), so that
// each is recorded for a retry; f.masq keeps failing.
func recordMasqFailures(t *testing.T, f *fixture, ids ...string) {
	t.Helper()
	f.masq.err = errors.New("xtables lock")
	for _, id := range ids {
		a := f.args(id, "")
		a.Netns = ""
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
	}
}

// holdRetry starts a DEL of c2 (its namespace live) whose retry of the
// masquerade removals recorded before stops in its first removal, holding
// the retries, until release is closed; it returns once the retry is held,
// and the DEL's result comes on retrying.
func holdRetry(t *testing.T, f *fixture) (release chan struct{}, retrying <-chan error) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.masq.during = func() {
		once.Do(func() {
			close(entered)
			<-release
		})
	}
	done := make(chan error, 1)
	go func() {
		a := f.args("c2", "")
		a.Netns = liveNetns(t, f)
		p := *f.p
		p.Stderr = io.Discard
		done <- p.Del(a)
	}()
	<-entered
	return release, done
}
