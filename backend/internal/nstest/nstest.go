// Package nstest gives a test a network namespace of its own, so that it can
// build links, addresses, routes and neighbours as root without touching the
// host's network, and prints what a namespace holds as text to compare.
//
// Every namespace is named /run/netns/<Prefix><pid>-<run>-<n>-<test>, so
// that `ip netns` shows whose it is, and is deleted in t.Cleanup, also when
// the test fails. Namespaces left behind by a test binary that was killed
// (its pid is gone) are deleted by the next run, after the processes still
// inside them (a descriptor keeper, say) are killed.
//
// Nothing here sends a packet: the namespaces are connected to nothing.
package nstest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Prefix starts the name of every namespace this package creates.
const Prefix = "agentd-nstest-"

const bindDir = nsreap.Dir

var (
	runID   = randomHex(3)
	counter atomic.Int64
	sweep   = nsreap.Sweeper{Prefix: Prefix}
)

// NS is a named network namespace that exists until the test ends.
type NS struct {
	Name string
	// NsHandle is an open handle to the namespace, for netlink
	// subscriptions (their Namespace option) and netns.Set.
	NsHandle netns.NsHandle
	// Handle is a netlink handle bound to the namespace: requests and dumps
	// made through it act there, from any goroutine that owns it.
	Handle *netlink.Handle
}

// RequireRoot skips the test when it is not run as root, or fails it when
// the CI environment variable is set: CI runs as root, so there a skip would
// hide a broken setup.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "this test needs root to create network namespaces (euid %d)", os.Geteuid())
	}
}

// Missing ends a test that cannot run here: it lacks root, a kernel feature
// or a tool, as said by format and args. With the CI environment variable
// set it fails the test, because CI provides all of them and a skip there
// would hide a broken setup; elsewhere it skips the test, with the reason.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so this is a failure, not a skip", why)
	}
	t.Skipf("skipping: %s; CI runs it (set CI=1 to make this a failure)", why)
}

// New creates a fresh network namespace for t and deletes it when t ends.
// The calling thread's namespace is not changed.
func New(t testing.TB) *NS {
	t.Helper()
	RequireRoot(t)
	// Namespaces of killed runs, and the processes still in them (a
	// descriptor keeper runs in a session of its own and outlives a killed
	// test binary, holding its namespace and devices).
	sweep.Sweep(t)

	name := fmt.Sprintf("%s%d-%s-%d-%s", Prefix, os.Getpid(), runID, counter.Add(1), sanitize(t.Name()))
	h, err := create(name)
	if err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	ns := &NS{Name: name, NsHandle: h}
	t.Cleanup(func() {
		if ns.Handle != nil {
			ns.Handle.Close()
		}
		if err := remove(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
		ns.NsHandle.Close()
	})
	ns.Handle, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("open netlink in %s: %v", name, err)
	}
	// Without IPv6, links send no router solicitations or DAD probes, so
	// the namespace stays silent even between its own links.
	for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
		if err := ns.Sysctl(k, "1"); err != nil {
			t.Fatalf("in %s: %v", name, err)
		}
	}
	return ns
}

// Sysctl sets a network sysctl ("net.ipv4.ip_forward") in the namespace.
// Dots separate path elements, so the key cannot name an interface whose
// name has a dot (flannel.1): write its /proc/sys path inside Do instead.
func (n *NS) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
		}
		return nil
	})
}

// Cmd returns a runner of prog, an iproute2 program (ip, bridge), with
// -n for the namespace, that fails the test with the command's output; a
// host without prog cannot run the test (Missing: "no <prog> command
// (iproute2) to <what>").
func (n *NS) Cmd(t testing.TB, prog, what string) func(args ...string) {
	t.Helper()
	path, err := exec.LookPath(prog)
	if err != nil {
		Missing(t, "no %s command (iproute2) to %s", prog, what)
	}
	return func(args ...string) {
		t.Helper()
		if out, err := exec.Command(path, append([]string{"-n", n.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", prog, strings.Join(args, " "), err, out)
		}
	}
}

// Do runs f on a thread switched into the namespace and switches it back
// before returning. When the thread cannot be switched back it is never
// reused: its goroutine exits still locked to it, so the runtime ends the
// thread. A panic in f is re-raised in the caller after the switch back.
func (n *NS) Do(f func() error) error {
	var (
		err      error
		panicked any
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		err = inNS(n.NsHandle, func() error {
			defer func() { panicked = recover() }()
			return f()
		})
	}()
	<-done
	if panicked != nil {
		panic(panicked)
	}
	return err
}

// inNS runs f with the locked calling thread in ns. It unlocks the thread
// only if it got back to where it was.
func inNS(ns netns.NsHandle, f func() error) error {
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("get current network namespace: %w", err)
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter network namespace: %w", err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// The thread stays locked and dies with its goroutine.
		return errors.Join(ferr, fmt.Errorf("return to the original network namespace: %w", err))
	}
	runtime.UnlockOSThread()
	return ferr
}

// create makes a named namespace the way `ip netns add` does: unshare on a
// locked thread, bind-mount the thread's namespace file, switch back.
func create(name string) (netns.NsHandle, error) {
	h := netns.None()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, gerr := netns.Get()
		if gerr != nil {
			runtime.UnlockOSThread()
			err = gerr
			return
		}
		defer orig.Close()
		if err = nsreap.PrepareDir(); err != nil {
			runtime.UnlockOSThread()
			return
		}
		path := filepath.Join(bindDir, name)
		f, ferr := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if ferr != nil {
			runtime.UnlockOSThread()
			err = ferr
			return
		}
		f.Close()
		if uerr := unix.Unshare(unix.CLONE_NEWNET); uerr != nil {
			runtime.UnlockOSThread()
			os.Remove(path)
			err = fmt.Errorf("unshare: %w", uerr)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if merr := unix.Mount(self, path, "none", unix.MS_BIND, ""); merr != nil {
			err = fmt.Errorf("bind-mount %s: %w", path, merr)
			os.Remove(path)
		} else {
			h, err = netns.GetFromPath(path)
			if err != nil {
				h = netns.None()
				unix.Unmount(path, unix.MNT_DETACH)
				os.Remove(path)
			}
		}
		if serr := netns.Set(orig); serr != nil {
			// Leave the thread locked: it dies with this goroutine.
			err = errors.Join(err, fmt.Errorf("return to the original network namespace: %w", serr))
			if h.IsOpen() {
				h.Close()
			}
			return
		}
		runtime.UnlockOSThread()
	}()
	<-done
	if err != nil {
		return netns.None(), err
	}
	return h, nil
}

func remove(name string) error { return nsreap.Delete(filepath.Join(bindDir, name)) }

func sanitize(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	if len(b) > 48 {
		b = b[:48]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}
