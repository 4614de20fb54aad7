package cluster

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestChildOutlivesThrownAwayThreads starts a long-running child in a
// namespace, then throws away 64 of the process's threads the way tests and
// etcdtest's dialers do (a goroutine that exits locked to its thread), and
// checks that the child was not sent the parent-death signal its thread
// carries. Before startHeld the forking thread went back to the runtime's
// pool and one of the thrown-away threads was it: the child was killed with
// nothing in its log, which in parallel tests killed another test's etcd
// and agentd.
func TestChildOutlivesThrownAwayThreads(t *testing.T) {
	c := Start(t, Options{NoEtcd: true})
	ns, err := c.AddNamespace("th")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ns.StartNamed("sleeper", "sleep", "600")
	if err != nil {
		t.Fatal(err)
	}
	// Exec's short child too: its thread is held until it is waited for.
	if _, err := ns.Exec(context.Background(), "true"); err != nil {
		t.Fatal(err)
	}
	var tids []int
	for range 64 {
		tid := make(chan int)
		go func() {
			runtime.LockOSThread()
			tid <- unix.Gettid()
		}()
		tids = append(tids, <-tid)
	}
	// A thread's exit sends its children's parent-death signals before its
	// entry leaves /proc/self/task: once all are gone, a SIGKILL sent to the
	// child is pending or done.
	deadline := time.Now().Add(10 * time.Second)
	for _, tid := range tids {
		for {
			if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); os.IsNotExist(err) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("thread %d, thrown away, still in /proc/self/task after 10 s", tid)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if p.Exited() {
		t.Fatalf("the child exited with %d after 64 threads were thrown away: killed with the thread that forked it", p.ExitCode())
	}
	if pending, err := sigkillPending(p.Pid()); err != nil {
		t.Fatal(err)
	} else if pending {
		t.Fatal("the child has a SIGKILL pending after 64 threads were thrown away: the parent-death signal of the thread that forked it")
	}
}

// sigkillPending reports whether pid's thread or thread group has SIGKILL
// pending, or pid is already a zombie or gone.
func sigkillPending(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if os.IsNotExist(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "State":
			if strings.HasPrefix(val, "Z") || strings.HasPrefix(val, "X") {
				return true, nil
			}
		case "SigPnd", "ShdPnd":
			mask, err := strconv.ParseUint(val, 16, 64)
			if err != nil {
				return false, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
			}
			if mask&(1<<(unix.SIGKILL-1)) != 0 {
				return true, nil
			}
		}
	}
	return false, nil
}
