package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"golang.org/x/sys/unix"
)

// TestFlanneldProcs: of a /proc, only the processes named flanneld in our
// network namespace count; not one of another namespace, not another
// program in ours, not one gone before its namespace was read.
func TestFlanneldProcs(t *testing.T) {
	proc := t.TempDir()
	for _, p := range []struct{ pid, comm, netns string }{
		{"10", "flanneld", "net:[1]"},
		{"11", "flanneld", "net:[2]"},
		{"12", "agentd", "net:[1]"},
		{"13", "flanneld-amd64", "net:[1]"},
		{"14", "flanneld", ""}, // gone between the two reads
		{"30", "flanneld", "net:[1]"},
	} {
		dir := filepath.Join(proc, p.pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte(p.comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if p.netns != "" {
			if err := os.Symlink(p.netns, filepath.Join(dir, "ns", "net")); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink("30", filepath.Join(proc, "self")); err != nil {
		t.Fatal(err)
	}
	if got, want := flanneldProcs(proc, "net:[1]", nil), []int{10, 30}; !slices.Equal(got, want) {
		t.Errorf("flanneldProcs = %v, want %v", got, want)
	}
	if got := flanneldProcs(filepath.Join(proc, "none"), "net:[1]", nil); got != nil {
		t.Errorf("flanneldProcs of a missing /proc = %v, want none", got)
	}
}

// TestFlanneldWatch: a flanneld stops the agent once two checks in a row
// have seen it; one seen once (udp's, which exits at once) does not.
func TestFlanneldWatch(t *testing.T) {
	scans := [][]int{{5}, {5, 7}, {7}, {}, {8}, {9}}
	i := 0
	w := &flanneldWatch{scan: func() []int { i++; return scans[i-1] }}
	var got [][]int
	for range scans {
		got = append(got, w.check())
	}
	want := [][]int{nil, {5}, {7}, nil, nil, nil}
	for j := range want {
		if !slices.Equal(got[j], want[j]) {
			t.Errorf("check %d (scan %v) = %v, want %v", j+1, scans[j], got[j], want[j])
		}
	}

	err := (&flanneldWatch{scan: func() []int { return []int{42} }}).run(t.Context(), time.Millisecond)
	if e, ok := errors.AsType[*flanneldRunningError](err); !ok || !e.later || !slices.Equal(e.pids, []int{42}) {
		t.Fatalf("run with flanneld 42 staying = %v, want it named as started while the agent ran", err)
	}
	if !strings.Contains(err.Error(), "flanneld (pid 42) started in this network namespace while agentd ran") {
		t.Errorf("error: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := (&flanneldWatch{scan: func() []int { return nil }}).run(ctx, time.Millisecond); err != nil {
		t.Errorf("run after ctx was done = %v, want nil", err)
	}
}

// TestRefusedBesideFlanneld: in a network namespace where a process named
// flanneld runs, the agent fails at start naming it and saying to stop
// it, before it reads etcd (there is none); a flanneld of another
// namespace (this test's) is not named.
func TestRefusedBesideFlanneld(t *testing.T) {
	cluster.RequireRoot(t)
	runBesideFlanneld(t, stateLockConfig(t), "Run", func(here int) []string {
		return []string{"flanneld (pid " + strconv.Itoa(here) + ") runs in this network namespace", "Stop flanneld first"}
	})
}

// runBesideFlanneld starts a fake flanneld in this test's namespace and
// one in a new namespace, runs the agent with cfg in the new one (bounded:
// an agent that does not look for flanneld waits for the etcd that is not
// there), and fails the test unless its error holds every string wants
// gives for the pid of the flanneld beside it. what names the run in the
// failure.
func runBesideFlanneld(t *testing.T, cfg Config, what string, wants func(here int) []string) {
	t.Helper()
	start := fakeFlanneld(t)
	elsewhere, err := start()
	if err != nil {
		t.Fatal(err)
	}
	inNewNetns(t, func() {
		here, err := start()
		if err != nil {
			t.Error(err)
			return
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		err = Run(ctx, cfg)
		for _, want := range wants(here.Process.Pid) {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s beside flanneld (pid %d here, %d elsewhere) = %v, want it refused saying %q", what, here.Process.Pid, elsewhere.Process.Pid, err, want)
			}
		}
	})
}

// TestFlanneldFoundUnderBounds: agentd under agentd.service's bounds
// (permitted CAP_NET_ADMIN and CAP_NET_RAW only) may not read the ns/net
// link of a flanneld run by root with all of root's capabilities (a ptrace
// access check), so the scan found none: under vxlan and host-gw such an
// agent started beside flanneld and ran with it (helper 212 ran the
// interop tests with a bounded agentd: 5 of 6 failed). A process whose
// net/unix is this namespace's is in it.
func TestFlanneldFoundUnderBounds(t *testing.T) {
	cluster.RequireRoot(t)
	c, err := fakeFlanneld(t)()
	if err != nil {
		t.Fatal(err)
	}
	type found struct {
		pids []int
		err  error
	}
	done := make(chan found, 1)
	go func() {
		// Never unlocked: the thread and its reduced capabilities end
		// with this goroutine.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		keep := uint32(1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_NET_RAW)
		data[0] = unix.CapUserData{Effective: keep, Permitted: keep}
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			done <- found{err: err}
			return
		}
		if _, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", c.Process.Pid)); !errors.Is(err, os.ErrPermission) {
			done <- found{err: fmt.Errorf("with the unit's capabilities flanneld's ns/net read: %v; want permission denied, else this test shows nothing", err)}
			return
		}
		done <- found{pids: flanneldScan()()}
	}()
	f := <-done
	if f.err != nil {
		t.Fatal(f.err)
	}
	if !slices.Contains(f.pids, c.Process.Pid) {
		t.Fatalf("flanneld (pid %d) in this namespace, found by an agent with the unit's capabilities: %v; want it found", c.Process.Pid, f.pids)
	}
}

// fakeFlanneld returns a start of a process named flanneld (sleep, run by
// a link of that name: a process's comm is the base name of the path it
// was started by) in the calling thread's namespaces, killed at the test's
// end.
func fakeFlanneld(t *testing.T) func() (*exec.Cmd, error) {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(t.TempDir(), "flanneld")
	if err := os.Symlink(sleep, fake); err != nil {
		t.Fatal(err)
	}
	return func() (*exec.Cmd, error) {
		c := exec.Command(fake, "600")
		if err := c.Start(); err != nil {
			return nil, err
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c, nil
	}
}
