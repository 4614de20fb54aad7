package cniplugin

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// flockDir takes the flock of directory dir, as another process does,
// until release is called or the test ends.
func flockDir(t *testing.T, dir string) (release func()) {
	t.Helper()
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		d.Close()
		t.Fatalf("flock %s: %v", dir, err)
	}
	t.Cleanup(func() { d.Close() })
	return func() { d.Close() }
}

// within runs cmd and returns its error, or fails the test if it has not
// returned after 10 s of real time (it waits for the lock that release
// lets go of, which is then let go of for it to end).
func within(t *testing.T, what string, release func(), cmd func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		release()
		<-done
		t.Fatalf("%s still waiting for dataDir's lock after 10 s", what)
		return nil
	}
}

// TestDataDirLockBounded: a process that holds dataDir's lock and does not
// let go (a command stopped, or stuck on a disk that does not answer)
// fails ADD's save and DEL's forgetting, after dataDirLockWait, with code
// 11 naming the holder: ADD before any delegate runs, saving nothing; DEL
// after its delegate's DEL, leaving the saved files for the runtime's
// retry, which then succeeds. Before, both waited for the lock without a
// limit, and every ADD and DEL of the node hung until the runtime killed
// it.
func TestDataDirLockBounded(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	wantErr := func(t *testing.T, cmd string, err error) {
		t.Helper()
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater {
			t.Fatalf("%s with dataDir's lock held: %v, want code 11", cmd, err)
		}
		for _, want := range []string{
			"still holds the lock of dataDir " + f.dataDir + " after 5s",
			fmt.Sprintf("held by pid %d (%s", os.Getpid(), os.Args[0]),
		} {
			if !strings.Contains(te.Msg, want) {
				t.Errorf("%s: %q does not say %q", cmd, te.Msg, want)
			}
		}
	}

	release := flockDir(t, f.dataDir)
	start := f.now
	err := within(t, "ADD", release, func() error { return f.p.Add(f.args("c1", "")) })
	wantErr(t, "ADD", err)
	if waited := f.now.Sub(start); waited < dataDirLockWait {
		t.Errorf("ADD waited %v of its clock, want %v", waited, dataDirLockWait)
	}
	if len(f.exec.calls) != 0 {
		t.Errorf("ADD ran the delegate: %+v", f.exec.calls)
	}
	if names := fileNames(t, f.dataDir); len(names) != 0 {
		t.Errorf("ADD saved %q", names)
	}

	release()
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD with the lock free: %v", err)
	}
	saved := fileNames(t, f.dataDir)
	release = flockDir(t, f.dataDir)
	err = within(t, "DEL", release, func() error { return f.p.Del(f.args("c1", "")) })
	wantErr(t, "DEL", err)
	if names := fileNames(t, f.dataDir); !slices.Equal(names, saved) {
		t.Errorf("after the failed DEL dataDir holds %q, want %q still", names, saved)
	}
	release()
	if err := f.p.Del(f.args("c1", "")); err != nil {
		t.Fatalf("DEL again with the lock free: %v", err)
	}
	if names := fileNames(t, f.dataDir); len(names) != 0 {
		t.Errorf("after DEL dataDir holds %q", names)
	}
	var cmds []string
	for _, c := range f.exec.calls {
		cmds = append(cmds, c.command)
	}
	if want := []string{"ADD", "DEL", "DEL"}; !slices.Equal(cmds, want) {
		t.Errorf("delegate ran %q, want %q", cmds, want)
	}
}

// TestParseFlockHolders: only holders of a flock of the one file count,
// not its waiters, nor POSIX or OFD locks, nor other files' locks.
func TestParseFlockHolders(t *testing.T) {
	locks := `1: FLOCK  ADVISORY  WRITE 18944 fe:00:10003570 0 EOF
2: -> FLOCK  ADVISORY  WRITE 2001 fe:00:10003570 0 EOF
3: OFDLCK ADVISORY  WRITE -1 fe:00:10003570 0 EOF
4: POSIX  ADVISORY  WRITE 77 fe:00:10003570 0 EOF
5: FLOCK  ADVISORY  WRITE 31 fe:01:10003570 0 EOF
6: FLOCK  ADVISORY  WRITE 32 fe:00:10003571 0 EOF
7: FLOCK  ADVISORY  READ  0 fe:00:10003570 0 EOF
garbage
`
	if got, want := parseFlockHolders([]byte(locks), 0xfe, 0, 10003570), []int{18944, 0}; !slices.Equal(got, want) {
		t.Errorf("holders %v, want %v", got, want)
	}
}

// TestDescribeHolders: the holder named in the error is this process with
// its command line; pid 0 (another PID namespace) and a pid that is gone
// are said to be so.
func TestDescribeHolders(t *testing.T) {
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	got := describeHolders(flockHolders(d))
	if want := fmt.Sprintf("held by pid %d (%s", os.Getpid(), os.Args[0]); !strings.HasPrefix(got, want) {
		t.Errorf("got %q, want it to start with %q", got, want)
	}
	if got := describeHolders(nil); !strings.Contains(got, "not listed in /proc/locks") {
		t.Errorf("no holder: %q", got)
	}
	if got := describeProcess(0); got != "a process of another PID namespace" {
		t.Errorf("pid 0: %q", got)
	}
	if got := describeProcess(1 << 30); !strings.Contains(got, "gone") {
		t.Errorf("a pid that is not there: %q", got)
	}
}
