package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// netnsDir is where named namespaces live, as with `ip netns add`.
const netnsDir = nsreap.Dir

// onThread runs f on a fresh goroutine locked to its OS thread and waits for
// it. f may switch the thread's network namespace. Afterwards the thread is
// switched back to the namespace it started in; if that fails, the goroutine
// exits still locked, which makes the runtime terminate the thread, so no other
// goroutine ever runs in a namespace it did not choose. A panic in f is
// re-raised in the caller.
func onThread(f func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open thread netns: %w", err)}
			return
		}
		var r result
		defer func() {
			if v := recover(); v != nil {
				r = result{panicked: true, value: v}
			}
			if err := netns.Set(orig); err == nil {
				runtime.UnlockOSThread()
			} else {
				r.err = errors.Join(r.err, fmt.Errorf("restore thread netns (thread discarded): %w", err))
			}
			orig.Close()
			done <- r
		}()
		r.err = f()
	}()
	r := <-done
	if r.panicked {
		panic(r.value)
	}
	return r.err
}

// inNetns runs f on an OS thread that has entered ns (see onThread).
func inNetns(ns netns.NsHandle, f func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("enter netns: %w", err)
		}
		return f()
	})
}

// createNetns creates a new network namespace bind-mounted at
// /var/run/netns/<name> (what `ip netns add` does) and returns an open handle
// to it. It fails if the name exists. The caller's thread never changes
// namespace.
func createNetns(name string) (netns.NsHandle, error) {
	if len(name) > 15 {
		return netns.None(), fmt.Errorf("netns name %q is longer than 15 characters", name)
	}
	if err := nsreap.PrepareDir(); err != nil {
		return netns.None(), err
	}
	path := filepath.Join(netnsDir, name)
	h := netns.None()
	err := onThread(func() error {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
		if err != nil {
			return err
		}
		f.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			os.Remove(path)
			return fmt.Errorf("unshare: %w", err)
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "none", unix.MS_BIND, ""); err != nil {
			os.Remove(path)
			return fmt.Errorf("bind-mount %s: %w", path, err)
		}
		h, err = netns.GetFromPath(path)
		return err
	})
	if err != nil {
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	return h, nil
}

// deleteNetns removes the name of a namespace. The kernel frees the
// namespace, and the links in it, once no process, socket or open handle
// refers to it any more. A name that does not exist is not an error.
func deleteNetns(name string) error { return nsreap.Delete(filepath.Join(netnsDir, name)) }

// nsInode identifies a namespace the way /proc/<pid>/ns/net does.
func nsInode(h netns.NsHandle) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(h), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// Namespace is one network namespace of the cluster: the switch, the etcd
// namespace, a host or a container. Its methods are safe for concurrent use.
// The cluster owns it: it stays valid until [Cluster.Close].
type Namespace struct {
	// Name is the namespace's name under /var/run/netns ("ad1234-h1"), usable
	// with `ip netns exec` or `nsenter --net=/var/run/netns/<Name>`.
	Name string
	// Short is the name without the cluster prefix ("h1", "h1c2", "etcd"); log
	// files are named after it.
	Short string

	c *Cluster
	// mu guards handle and nl against release: a gRPC client's dials can
	// outlive its Close and reach Dial while the cluster closes, and a
	// check a failed test left running can reach the netlink helpers.
	// Only hold and withNetlink read them (and Close, before release).
	mu     sync.RWMutex
	handle netns.NsHandle
	nl     *netlink.Handle
}

// errReleased is what entering a namespace returns once the cluster has
// released it.
var errReleased = errors.New("namespace released (cluster closed)")

// AddNamespace makes an empty namespace "<prefix><short>" (lo up, nothing
// else) that the cluster deletes at Close, for tests that wire it
// themselves, e.g. a pod namespace handed to a CNI plugin as CNI_NETNS. short
// must keep the whole name within 15 characters.
func (c *Cluster) AddNamespace(short string) (*Namespace, error) {
	return c.newNamespace(short)
}

func (c *Cluster) newNamespace(short string) (*Namespace, error) {
	name := c.prefix + short
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	h, err := createNetns(name)
	if err != nil {
		return nil, err
	}
	n := &Namespace{Name: name, Short: short, c: c, handle: h}
	n.nl, err = netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		n.release()
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	// From here on Close owns the namespace.
	c.mu.Lock()
	closed = c.closed
	if !closed {
		c.namespaces = append(c.namespaces, n)
	}
	c.mu.Unlock()
	if closed {
		n.release()
		return nil, errClosed
	}
	if err := n.setUp("lo"); err != nil {
		return nil, err
	}
	return n, nil
}

// release closes the handles and deletes the name. Idempotent.
func (n *Namespace) release() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
	return deleteNetns(n.Name)
}

// WithNetlink calls f with a netlink handle bound to the namespace, for
// checks and faults the harness has no helper for, and returns f's error;
// once the cluster has released the namespace it returns errReleased
// instead. The handle is valid only during f: do not close or keep it.
// Close waits for f to return, so f must be quick and must not call the
// namespace's methods: with Close waiting, they would wait for f, and f
// for them.
func (n *Namespace) WithNetlink(f func(nl *netlink.Handle) error) error {
	return n.withNetlink(f)
}

// withNetlink is WithNetlink, for the harness. Using n.nl outside the read
// lock would race with release, and a closed netlink.Handle does not fail:
// with no sockets it falls back to the calling thread's namespace.
func (n *Namespace) withNetlink(f func(nl *netlink.Handle) error) error {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.nl == nil {
		return fmt.Errorf("%s: %w", n.Name, errReleased)
	}
	return f(n.nl)
}

// LinkByName looks the named link up in the namespace.
func (n *Namespace) LinkByName(name string) (netlink.Link, error) {
	var l netlink.Link
	err := n.withNetlink(func(nl *netlink.Handle) (err error) {
		l, err = nl.LinkByName(name)
		return err
	})
	return l, err
}

// Do runs f on an OS thread inside the namespace and returns its error. Only
// f's own thread is in the namespace: goroutines f starts are not, but sockets
// f creates stay in it. f must not block for long (it holds a thread).
func (n *Namespace) Do(f func() error) error {
	h, err := n.hold()
	if err != nil {
		return err
	}
	defer h.Close()
	return inNetns(h, f)
}

// hold returns a duplicate of the namespace's handle for the caller to use
// and close. Using n.handle itself would race with release, and a descriptor
// number that release closed can be reused by an unrelated file, or another
// namespace, before the setns.
func (n *Namespace) hold() (netns.NsHandle, error) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if !n.handle.IsOpen() {
		return netns.None(), fmt.Errorf("%s: %w", n.Name, errReleased)
	}
	fd, err := unix.FcntlInt(uintptr(n.handle), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return netns.None(), fmt.Errorf("%s: duplicate netns handle: %w", n.Name, err)
	}
	return netns.NsHandle(fd), nil
}

// Dial opens a connection whose socket is created inside the namespace, so
// the root-namespace test process can talk to a server in the cluster
// without connecting the namespaces. addr must be a literal IP:port (no name
// resolution happens, so nothing else runs in the namespace); network is
// "tcp", "tcp4", "udp" or "udp4". The socket keeps its namespace for life.
func (n *Namespace) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	h, err := n.hold()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	return dialInNetns(ctx, h, network, addr)
}

// Listen opens a listener whose socket is created inside the namespace, for
// a test's server there; addr is a literal IP:port.
func (n *Namespace) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// dialInNetns is the one place where the harness makes sockets in a
// namespace: the etcd client, readiness probes and tests all use it.
func dialInNetns(ctx context.Context, ns netns.NsHandle, network, addr string) (net.Conn, error) {
	// gRPC may hand over a URL-ish target ("http://198.18.0.254:2379").
	if i := strings.Index(addr, "://"); i >= 0 {
		addr = addr[i+3:]
	}
	if _, err := netip.ParseAddrPort(addr); err != nil {
		return nil, fmt.Errorf("dial in netns: %q is not a literal ip:port: %w", addr, err)
	}
	var conn net.Conn
	err := inNetns(ns, func() error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, network, addr)
		return err
	})
	return conn, err
}

// Exec runs a command inside the namespace and returns its combined stdout
// and stderr. A non-zero exit is an error that carries the output. ctx bounds
// the command: on cancellation its whole process group is killed.
func (n *Namespace) Exec(ctx context.Context, name string, args ...string) ([]byte, error) {
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = n.c.childEnv(nil)
	cmd.SysProcAttr = childAttrs()
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	release, err := n.startHeld(cmd)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", name, n.Short, err)
	}
	err = cmd.Wait()
	release()
	if err != nil {
		return out.Bytes(), fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Short, err, tail(out.Bytes(), 2000))
	}
	return out.Bytes(), nil
}

// Start starts a long-running command inside the namespace, with stdout and
// stderr appended to <LogDir>/<Short>-<base name of the command>.log. The
// process is not tied to any context: it runs until it exits, is stopped
// through the returned Process, or the cluster closes.
func (n *Namespace) Start(name string, args ...string) (*Process, error) {
	return n.start(n.Short+" "+filepath.Base(name), n.Short+"-"+filepath.Base(name)+".log", nil, name, args...)
}

// StartNamed is Start for commands whose program name says little (nsenter,
// unshare): the process is called "<Short> <label>" in messages and its
// output goes to <LogDir>/<Short>-<label>.log.
func (n *Namespace) StartNamed(label, name string, args ...string) (*Process, error) {
	return n.start(n.Short+" "+label, n.Short+"-"+label+".log", nil, name, args...)
}

// start runs a process in the namespace, called procName in messages. env
// adds to the harness's child environment (see childEnv).
func (n *Namespace) start(procName, logName string, env []string, name string, args ...string) (*Process, error) {
	c := n.c
	logPath := filepath.Join(c.logDir, logName)
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close() // the child has its own copy
	fmt.Fprintf(f, "=== %s cluster: start in %s: %s %s\n", time.Now().Format(time.RFC3339Nano), n.Name, name, strings.Join(args, " "))

	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = c.childEnv(env)
	cmd.SysProcAttr = childAttrs()
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	release, err := n.startHeld(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", name, n.Short, err)
	}
	p := newProcess(procName, cmd, logPath, c.opts.StopTimeout, release)
	c.mu.Lock()
	c.procs = append(c.procs, p)
	closed = c.closed
	c.mu.Unlock()
	if closed { // Close ran between Start and here and cannot have seen p.
		p.Kill()
		return nil, errClosed
	}
	return p, nil
}

// startHeld starts cmd inside the namespace from a goroutine locked to its OS
// thread, and keeps that thread locked, out of the runtime's pool, until
// release is called, once the child has been reaped. The parent-death signal
// of childAttrs follows the thread that forked the child, not the process:
// a pool thread ends whenever a goroutine exits locked to it (tests and
// etcdtest's dialers do that to throw away a thread left in another
// namespace), and before 2026-12-07 that killed every child the thread had
// started, such as another test's etcd or agentd, with nothing in its log.
// If the thread cannot be switched back it is thrown away after release.
func (n *Namespace) startHeld(cmd *exec.Cmd) (release func(), err error) {
	h, err := n.hold()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	started := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			started <- fmt.Errorf("open thread netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			runtime.UnlockOSThread()
			started <- fmt.Errorf("enter netns: %w", err)
			return
		}
		err = cmd.Start()
		restored := netns.Set(orig) == nil
		started <- err
		if err == nil {
			<-done
		}
		if restored {
			runtime.UnlockOSThread()
		}
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return sync.OnceFunc(func() { close(done) }), nil
}

// childAttrs: every child leads its own process group (so a terminal's
// Ctrl-C reaches the harness, which then cleans up in order, and Kill can take
// the child's own children with it) and dies with the thread that started it
// if the test process dies without cleaning up (see startHeld).
func childAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Sysctl writes value to /proc/sys/<key> (key like "net/ipv4/ip_forward")
// from a thread inside the namespace: files under /proc/sys/net belong to the
// namespace of the thread that opens them.
func (n *Namespace) Sysctl(key, value string) error {
	path := filepath.Join("/proc/sys", key)
	err := n.Do(func() error { return os.WriteFile(path, []byte(value), 0o644) })
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w", key, value, n.Short, err)
	}
	return nil
}

// ReadSysctl reads /proc/sys/<key> inside the namespace, without the
// trailing newline.
func (n *Namespace) ReadSysctl(key string) (string, error) {
	var b []byte
	err := n.Do(func() error {
		var err error
		b, err = os.ReadFile(filepath.Join("/proc/sys", key))
		return err
	})
	return strings.TrimSpace(string(b)), err
}

// DeleteLink deletes the named link in the namespace (a fault: "someone
// deleted our device"). A link that does not exist is an error.
func (n *Namespace) DeleteLink(name string) error {
	return n.withNetlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Short, name, err)
		}
		if err := nl.LinkDel(l); err != nil {
			return fmt.Errorf("%s: delete link %s: %w", n.Short, name, err)
		}
		return nil
	})
}

// SetLinkUp sets the named link administratively up or down.
func (n *Namespace) SetLinkUp(name string, up bool) error {
	return n.withNetlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(name)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Short, name, err)
		}
		if up {
			err = nl.LinkSetUp(l)
		} else {
			err = nl.LinkSetDown(l)
		}
		if err != nil {
			return fmt.Errorf("%s: set link %s up=%v: %w", n.Short, name, up, err)
		}
		return nil
	})
}

func (n *Namespace) setUp(name string) error { return n.SetLinkUp(name, true) }

// tail returns at most the last max bytes of b, as text.
func tail(b []byte, max int) string {
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// addrUp adds addr to the link called name and sets it up, over nl (a
// namespace's handle, see withNetlink); short names the namespace in errors.
func addrUp(nl *netlink.Handle, short, name string, addr netip.Prefix) (netlink.Link, error) {
	l, err := nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %w", short, name, err)
	}
	if err := nl.AddrAdd(l, &netlink.Addr{IPNet: prefixToIPNet(addr)}); err != nil {
		return nil, fmt.Errorf("%s: add %s to %s: %w", short, addr, name, err)
	}
	if err := nl.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("%s: %s up: %w", short, name, err)
	}
	return l, nil
}
