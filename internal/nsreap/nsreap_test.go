package nsreap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// requireRoot fails the test in CI (CI set) and skips it elsewhere when it
// cannot create network namespaces or lacks ip(8).
func requireRoot(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = fmt.Sprintf("needs root to create network namespaces (euid %d)", os.Geteuid())
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip(8) to create a network namespace (apt-get install iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so this is a failure", why)
	}
	t.Skipf("skipping: %s; CI runs it", why)
}

// deadPID returns the pid of a process that has exited and been reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	pid := c.Process.Pid
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("pid %d of an exited process: kill 0 says %v (reused already)", pid, err)
	}
	return pid
}

// TestSweepStale: the namespace of a dead run is deleted and the process
// left inside it (which holds it) is killed; the namespace of a live run
// (this one) and its process stay.
func TestSweepStale(t *testing.T) {
	requireRoot(t)
	const prefix = "agentd-nsreap-test-"
	stale := fmt.Sprintf("%s%d-1", prefix, deadPID(t))
	live := fmt.Sprintf("%s%d-1", prefix, os.Getpid())
	exited := map[string]chan error{}
	for _, name := range []string{stale, live} {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			t.Fatalf("ip netns add %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() {
			if err := Delete(filepath.Join(Dir, name)); err != nil {
				t.Errorf("delete %s: %v", name, err)
			}
		})
		// A process left behind, as a keeper or daemon would be. It
		// sends nothing; it only holds the namespace.
		c := exec.Command("ip", "netns", "exec", name, "sleep", "600")
		c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		t.Cleanup(func() {
			_ = c.Process.Kill()
			<-done
		})
		exited[name] = done
		// ip netns exec switches namespaces before it execs sleep:
		// wait until the process is inside.
		ino, err := Inode(filepath.Join(Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for len(PIDsIn(map[uint64]bool{ino: true})) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("pid %d not in namespace %s after 10s", c.Process.Pid, name)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	deleted, err := SweepStale(prefix)
	if err != nil {
		t.Fatalf("SweepStale: %v", err)
	}
	if len(deleted) != 1 || deleted[0] != stale {
		t.Errorf("deleted %v, want only %s", deleted, stale)
	}
	if _, err := os.Stat(filepath.Join(Dir, stale)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale namespace %s is still there: %v", stale, err)
	}
	if _, err := os.Stat(filepath.Join(Dir, live)); err != nil {
		t.Errorf("the live namespace %s is gone: %v", live, err)
	}
	select {
	case err := <-exited[stale]:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("the process in the stale namespace ended with %v, want SIGKILL", err)
		}
		exited[stale] <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("the process in the stale namespace is alive 10s after the sweep")
	}
	select {
	case err := <-exited[live]:
		exited[live] <- err
		t.Errorf("the process in the live namespace ended: %v", err)
	default:
	}
}
