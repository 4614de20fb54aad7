package agent

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/tests/cluster"
	"golang.org/x/sys/unix"
)

// netnsSquatterEnv, in the environment, makes TestNetnsClaim the squatter:
// a process that binds the claim's name, becomes nobody, says "ready" and
// holds the name until its stdin closes.
const netnsSquatterEnv = "AGENTD_TEST_NETNS_SQUATTER"

// TestNetnsClaim, in a network namespace of its own: the first claim holds
// the name; a second fails naming the holder's pid; a child started
// meanwhile (the udp keeper outlives the agent) does not keep it; once
// closed it is free again; and a process of another user holding the name
// is reported as a squatter, not refused as an agent.
func TestNetnsClaim(t *testing.T) {
	if os.Getenv(netnsSquatterEnv) != "" {
		os.Exit(squatNetnsClaim())
	}
	cluster.RequireRoot(t)
	inNewNetns(t, func() {
		first, squatters, err := claimNetns()
		if err != nil || first == nil {
			t.Errorf("first claim: %v, %v, squatters %v; want it held", first, err, squatters)
			return
		}
		_, _, err = claimNetns()
		var running *agentInNetnsError
		if !errors.As(err, &running) || !slices.Equal(running.held.Pids, []int{os.Getpid()}) {
			t.Errorf("second claim: %v, want an agentInNetnsError naming pid %d", err, os.Getpid())
		} else if want := fmt.Sprintf("another agentd (pid %d) runs in this network namespace", os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Stop one of them") {
			t.Errorf("second claim: %q, want it to say %q and what to do", err, want)
		}

		child := exec.Command("cat")
		stdin, err := child.StdinPipe()
		if err != nil {
			t.Error(err)
			return
		}
		if err := child.Start(); err != nil {
			t.Error(err)
			return
		}
		defer func() { stdin.Close(); _ = child.Wait() }()
		first.Close()
		again, _, err := claimNetns()
		if err != nil || again == nil {
			t.Errorf("claim after the holder closed it, its child still running: %v, %v; want it held", again, err)
			return
		}
		again.Close()

		squatter := exec.Command("/proc/self/exe", "-test.run=^TestNetnsClaim$")
		squatter.Env = append(os.Environ(), netnsSquatterEnv+"=1")
		stop, err := testchild.StartReady(squatter, nil)
		if err != nil {
			t.Errorf("the squatter: %v", err)
			return
		}
		defer stop()
		f, squatters, err := claimNetns()
		if f != nil {
			f.Close()
		}
		if err != nil || f != nil || !slices.Equal(squatters, sockclaim.Squatters{{Pid: squatter.Process.Pid, UID: nobody}}) {
			t.Errorf("claim beside a squatter of another user: %v, %v, squatters %v; want no claim, no error and squatter %d", f, err, squatters, squatter.Process.Pid)
		}
	})
}

// inNewNetns runs f on a thread of its own in a new network namespace. The
// thread is never unlocked, so it ends with f's goroutine and takes the
// namespace with it; children f starts are forked from it, into it.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		f()
	}()
	<-done
}

// nobody is the user of the tests' squatters.
const nobody = 65534

// squatNetnsClaim is the squatter's body (netnsSquatterEnv); its exit code.
func squatNetnsClaim() int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "squatter:", err); return 1 }
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		return fail(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: netnsClaimAddr}); err != nil {
		return fail(err)
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fail(err)
	}
	if err := syscall.Setresgid(nobody, nobody, nobody); err != nil {
		return fail(err)
	}
	if err := syscall.Setresuid(nobody, nobody, nobody); err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}
