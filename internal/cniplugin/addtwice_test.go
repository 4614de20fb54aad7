package cniplugin

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestAddTwiceAtOnce: two ADDs of one attachment at the same time (a
// runtime retrying an ADD that has not returned yet), then its DEL, leave
// nothing in dataDir, and flannel's per-container name is the attachment's
// file until then. Before, the saves ran side by side: the second ADD
// looked at the per-container name (dataDir/<container ID>) while the
// first had taken it off, wrote the attachment's file and linked the name
// to it; the first then replaced the attachment's file, so the name kept
// the second's configuration alone, a file that looks like flannel's, and
// DEL, which took the attachment's file only, left it for good. Here the
// first ADD stops in its save just after taking the name off; without the
// interleaving forced, 63 of 200 pairs of ADDs left the file.
func TestAddTwiceAtOnce(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}

	held, release := make(chan struct{}), make(chan struct{})
	waiting := make(chan struct{})
	add := func(hold bool) <-chan error {
		done := make(chan error, 1)
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec, p.masq = &fakeExec{}, &fakeMasq{}
		// Real time: each ADD waits dataDirLockWait at most for the
		// other's save. The second says so when it first waits.
		var once sync.Once
		p.now = time.Now
		p.sleep = func(d time.Duration) {
			if !hold {
				once.Do(func() { close(waiting) })
			}
			time.Sleep(d)
		}
		if hold {
			p.crash = func(step string) bool {
				if step == "legacy name removed" {
					close(held)
					<-release
				}
				return false
			}
		}
		go func() { done <- p.Add(f.args("c1", "")) }()
		return done
	}
	first := add(true)
	<-held
	second := add(false)
	// The second ADD must wait for the first's save (lockDataDir's
	// wait), not return.
	var errs [2]error
	returned := false
	select {
	case <-waiting:
	case err := <-second:
		returned = true
		errs[1] = err
		t.Errorf("the second ADD did not wait for the first's save: it returned (%v)", err)
	}
	close(release)
	errs[0] = <-first
	if !returned {
		errs[1] = <-second
	}
	for i, err := range errs {
		if err != nil {
			t.Errorf("ADD %d: %v", i+1, err)
		}
	}
	if !sameFile(filepath.Join(f.dataDir, "c1"), f.saved("c1")) {
		t.Errorf("flannel's per-container name is not the attachment's file after both ADDs")
	}
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	if names := fileNames(t, f.dataDir); len(names) != 0 {
		t.Errorf("after both ADDs and the DEL, dataDir holds %q", names)
	}
}

// delHeldExec is a fakeExec whose delegate DEL calls held before it
// returns.
type delHeldExec struct {
	fakeExec
	held func()
}

func (e *delHeldExec) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	if slices.Contains(environ, "CNI_COMMAND=DEL") {
		e.held()
	}
	return e.fakeExec.ExecPlugin(ctx, path, stdin, environ)
}

// TestDelDuringAddAgain: a DEL of an attachment at the same time as an ADD
// of it again leaves no file under flannel's per-container name
// (dataDir/<container ID>) alone. Before, DEL took no part in save's lock:
// it read the saved files while the ADD had taken that name off the
// attachment's file, so it was to remove the attachment's file only; the
// ADD then linked the name to its new file, and DEL removed the
// attachment's name of it, leaving the configuration under the
// per-container name alone, a file that looks like flannel's, which no DEL
// of the attachment removes and another attachment's DEL would take. Here
// the ADD stops in its save just after taking the name off, and the DEL in
// its delegate's DEL until the ADD has returned.
func TestDelDuringAddAgain(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}

	addHeld, addRelease := make(chan struct{}), make(chan struct{})
	addDone := make(chan error, 1)
	a := *f.p
	a.Stdout, a.Stderr = io.Discard, io.Discard
	a.Exec, a.masq = &fakeExec{}, &fakeMasq{}
	a.crash = func(step string) bool {
		if step == "legacy name removed" {
			close(addHeld)
			<-addRelease
		}
		return false
	}
	go func() { addDone <- a.Add(f.args("c1", "")) }()
	<-addHeld

	delHeld, delRelease := make(chan struct{}), make(chan struct{})
	delDone := make(chan error, 1)
	d := *f.p
	d.Stdout, d.Stderr = io.Discard, io.Discard
	d.Exec = &delHeldExec{held: func() {
		close(delHeld)
		<-delRelease
	}}
	d.masq = &fakeMasq{}
	go func() { delDone <- d.Del(f.args("c1", "")) }()
	<-delHeld

	close(addRelease)
	if err := <-addDone; err != nil {
		t.Errorf("ADD: %v", err)
	}
	close(delRelease)
	if err := <-delDone; err != nil {
		t.Errorf("DEL: %v", err)
	}
	legacy := filepath.Join(f.dataDir, "c1")
	if _, err := os.Stat(legacy); err == nil && !sameFile(legacy, f.saved("c1")) {
		t.Errorf("after the ADD and the DEL, flannel's per-container name %s is left alone (dataDir holds %q)", legacy, fileNames(t, f.dataDir))
	}
}
