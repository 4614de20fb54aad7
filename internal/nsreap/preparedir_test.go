package nsreap

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// preparedChildEnv makes this test binary, run again, the child of
// TestNamesDeletableAfterIPNetnsAdd instead of running tests.
const preparedChildEnv = "AGENTD_NSREAP_PREPARED_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(preparedChildEnv) != "" {
		if err := preparedChild(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestNamesDeletableAfterIPNetnsAdd: on a new machine /run/netns is a plain
// directory. The test harnesses bound their namespaces in it, and the first
// `ip netns add` (another test, a person at the shell) then bound the
// directory onto itself: the harnesses' names were hidden under that mount,
// every delete failed with EBUSY, and every later sweep of their dead runs
// failed the test that swept. Seen on this project's machine: 27 names of
// five runs left in /run/netns. The child runs in a mount namespace of its
// own with a tmpfs on /run, so the machine's /run/netns is not touched.
func TestNamesDeletableAfterIPNetnsAdd(t *testing.T) {
	requireRoot(t)
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(os.Environ(), preparedChildEnv+"=1")
	// Go makes the child's mounts private (MS_REC|MS_PRIVATE on /) when
	// it unshares the mount namespace, so nothing propagates back.
	c.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

// preparedChild binds a namespace in a new, plain /run/netns as the
// harnesses do (after PrepareDir), lets ip(8) add one of its own, and
// deletes both.
func preparedChild() error {
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on /run: %w", err)
	}
	if err := PrepareDir(); err != nil {
		return err
	}
	ours := filepath.Join(Dir, "harness")
	if err := bindNewNetns(ours); err != nil {
		return err
	}
	if out, err := exec.Command("ip", "netns", "add", "iproute2").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, out)
	}
	for _, path := range []string{ours, filepath.Join(Dir, "iproute2")} {
		if err := Delete(path); err != nil {
			return fmt.Errorf("delete %s after ip netns add: %w", path, err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%s still there after its delete (%v)", path, err)
		}
	}
	return nil
}

// bindNewNetns binds a new network namespace at path, as the harnesses do.
func bindNewNetns(path string) error {
	errc := make(chan error)
	go func() {
		// The thread ends in the new namespace: it is never unlocked, so
		// it exits with this goroutine.
		runtime.LockOSThread()
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			errc <- err
			return
		}
		f.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind %s: %w", path, err)
			return
		}
		errc <- nil
	}()
	return <-errc
}
