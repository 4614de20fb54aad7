package sockclaim

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"syscall"
	"testing"

	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/tests/cluster"
	"golang.org/x/sys/unix"
)

// squatterEnv, in the environment, makes TestClaimSquatterNotReadable's
// binary the squatter: it becomes nobody, binds the name given, says
// "ready" and holds it until its stdin closes.
const squatterEnv = "AGENTD_TEST_SOCKCLAIM_SQUATTER"

const nobody = 65534

// TestClaimSquatterNotReadable: a root process without CAP_SYS_PTRACE and
// CAP_DAC_* in its effective set (agentd under agentd.service, bounded to
// CAP_NET_ADMIN and CAP_NET_RAW; the DaemonSet's agent) may not read the
// descriptors of another user's process, so /proc shows it no holder of a name that user
// bound. Claim took that for another agentd it could not see and refused
// (a *HeldError): any local user who bound @agentd-agent first kept agentd
// from starting. The socket's owner, from sock_diag, says it is another
// user's: a squatter, whose pid is not known.
func TestClaimSquatterNotReadable(t *testing.T) {
	if addr := os.Getenv(squatterEnv); addr != "" {
		os.Exit(squat(addr))
	}
	cluster.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, its namespace and its reduced
		// capabilities end with this goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("new network namespace: %v", err)
			return
		}
		addr := fmt.Sprintf("@agentd-squat-%d", os.Getpid())
		squatter := exec.Command("/proc/self/exe", "-test.run=^TestClaimSquatterNotReadable$")
		squatter.Env = append(os.Environ(), squatterEnv+"="+addr)
		stop, err := testchild.StartReady(squatter, nil)
		if err != nil {
			t.Errorf("the squatter: %v", err)
			return
		}
		defer stop()
		// As under agentd.service's bounds: no CAP_SYS_PTRACE,
		// CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH.
		if err := dropEffective(unix.CAP_SYS_PTRACE, unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH); err != nil {
			t.Errorf("drop capabilities from this thread: %v", err)
			return
		}
		if _, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", squatter.Process.Pid)); !errors.Is(err, os.ErrPermission) {
			t.Errorf("without those capabilities the squatter's descriptors read: %v; want permission denied, else this test shows nothing", err)
			return
		}
		f, squatters, err := Claim(addr, "claim")
		if f != nil {
			f.Close()
		}
		if want := (Squatters{{UID: nobody}}); err != nil || f != nil || !slices.Equal(squatters, want) {
			t.Errorf("Claim(%q) beside another user's squatter whose descriptors this thread may not read: %v, %v, squatters %v; want no claim, no error and squatters %v", addr, f, err, squatters, want)
		}
		if got, want := squatters.String(), "uid 65534, its process not readable here"; got != want {
			t.Errorf("squatters named %q, want %q", got, want)
		}
	}()
	<-done
}

// squat is the squatter's body (squatterEnv): nobody's socket bound to
// addr. Its exit code.
func squat(addr string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "squatter:", err); return 1 }
	if err := syscall.Setgroups(nil); err != nil {
		return fail(err)
	}
	if err := syscall.Setresgid(nobody, nobody, nobody); err != nil {
		return fail(err)
	}
	if err := syscall.Setresuid(nobody, nobody, nobody); err != nil {
		return fail(err)
	}
	// Dumpable, as a process started by that user is: /proc shows its
	// files as that user's, not root's.
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0); err != nil {
		return fail(err)
	}
	if _, err := Bind(addr, "squat"); err != nil {
		return fail(err)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// dropEffective drops capabilities caps from this thread's effective set;
// they stay permitted.
func dropEffective(caps ...uint) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	for _, c := range caps {
		data[c/32].Effective &^= 1 << (c % 32)
	}
	return unix.Capset(&hdr, &data[0])
}
