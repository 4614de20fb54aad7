package cniplugin

import (
	"io"
	"path/filepath"
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
	add := func(hold bool) <-chan error {
		done := make(chan error, 1)
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec, p.masq = &fakeExec{}, &fakeMasq{}
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
	// Nothing shows that the second ADD waits for the first's save but
	// its not returning: it has a second to, and must not.
	var errs [2]error
	returned := false
	select {
	case errs[1] = <-second:
		returned = true
		t.Errorf("the second ADD returned (%v) while the first was in the middle of its save", errs[1])
	case <-time.After(time.Second):
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
