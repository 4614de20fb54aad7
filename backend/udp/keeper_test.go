package udp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestKeeperExchangeSurvivesSignals: asking the keeper for its descriptors
// works every time while both ends keep receiving signals, as Go programs
// do (the runtime preempts goroutines with SIGURG). The keeper's socket
// calls have timeouts, which the kernel does not restart after a signal:
// before they were retried on EINTR, 43 of 2000 requests failed here: "broken
// pipe" when the keeper's read was cut short (what once made a restarted
// agent in CI start afresh and drop 2 pings), "interrupted system call"
// when the agent's own was.
func TestKeeperExchangeSurvivesSignals(t *testing.T) {
	h := newTestHost(t)
	pids := []int{h.b.keeper.Process.Pid, os.Getpid()}
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, pid := range pids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := syscall.Kill(pid, syscall.SIGURG); err != nil {
					t.Errorf("signal %d: %v", pid, err)
					return
				}
				// Pacing only: a signal every few microseconds.
				time.Sleep(20 * time.Microsecond)
			}
		}()
	}
	const n = 2000
	failed := map[string]int{}
	for range n {
		err := h.host.Do(func() error {
			k, ok, err := fetchKept(context.Background(), DeviceName)
			if ok {
				k.close()
			} else if err == nil {
				err = errors.New("no keeper answered")
			}
			return err
		})
		if err != nil {
			failed[err.Error()]++
		}
	}
	stop.Store(true)
	wg.Wait()
	if len(failed) > 0 {
		t.Fatalf("of %d requests under signals, these failed: %v", n, failed)
	}
	if err := syscall.Kill(pids[0], 0); err != nil {
		t.Fatalf("the keeper is gone: %v", err)
	}
}

// squatterEnv, in the environment, makes the test binary a squatter on the
// keeper's socket (runSquatter); its value is "<backlog>,<full>", and
// ",<name>" to squat another abstract name than the keeper's.
const squatterEnv = "AGENTD_UDP_TEST_SQUATTER"

// keeperCheckEnv, in a keeper's environment (keeperTestEnv), sets the
// test binary's keeperCheck, as a duration. Not AGENTD_*: agentd reads
// those as its flags' settings.
const keeperCheckEnv = "UDP_TEST_KEEPER_CHECK"

// nobody is the user the squatter runs as.
const nobody = 65534

// runSquatter is what any local user can do to the keeper's abstract name:
// bind it first, listen with the given backlog and never accept. With full
// set it also fills the backlog with connections of its own, so that the
// next connect waits for room. It runs as root until it has bound the name,
// then as nobody (listen records the listener's credentials, which a client
// reads with SO_PEERCRED), says "ready" and waits for stdin to close.
func runSquatter(spec string) int {
	b, full, _ := strings.Cut(spec, ",")
	full, name, _ := strings.Cut(full, ",")
	backlog, err := strconv.Atoi(b)
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "squatter:", err); return 1 }
	if err != nil {
		return fail(err)
	}
	if name == "" {
		name = keeperAddr(DeviceName)
	}
	addr := &unix.SockaddrUnix{Name: name}
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET, 0)
	if err != nil {
		return fail(err)
	}
	if err := unix.Bind(ln, addr); err != nil {
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
	if err := unix.Listen(ln, backlog); err != nil {
		return fail(err)
	}
	for full == "full" {
		c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK, 0)
		if err != nil {
			return fail(err)
		}
		if err := unix.Connect(c, addr); errors.Is(err, unix.EAGAIN) {
			break // no room left
		} else if err != nil {
			return fail(err)
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

// squat starts a squatter on the keeper's name in the host namespace, as
// user nobody; it ends with the test, or when stop (returned) is called.
func (h *testHost) squat(backlog int, full bool) (stop func()) {
	h.t.Helper()
	return h.squatOn("", backlog, full)
}

// squatOn is squat on the abstract name addr ("": the keeper's).
func (h *testHost) squatOn(addr string, backlog int, full bool) (stop func()) {
	h.t.Helper()
	spec := strconv.Itoa(backlog) + ","
	if full {
		spec += "full"
	}
	spec += "," + addr
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(os.Environ(), squatterEnv+"="+spec)
	return h.startChild(cmd, "the squatter")
}

// startChild starts cmd in the host's namespace and waits for its "ready"
// line: a child of this test binary that says so on stdout once set up and
// runs until its stdin closes. what names it in failures. stop, also run
// when the test ends, closes its stdin and waits for it to exit; it may be
// called more than once.
func (h *testHost) startChild(cmd *exec.Cmd, what string) (stop func()) {
	h.t.Helper()
	// A child starts in the namespace of the thread that forks it.
	stopChild, err := testchild.StartReady(cmd, func() error { return h.host.Do(cmd.Start) })
	if err != nil {
		h.t.Fatalf("%s: %v", what, err)
	}
	stop = func() { _ = stopChild() }
	h.t.Cleanup(stop)
	return stop
}

// TestPrepareWithSquattedKeeperSocket: the keeper's socket is an abstract
// name, which any local user can bind before a keeper does. Such a squatter,
// listening and never accepting, must not stop the agent: Prepare goes on
// without a keeper, after a bounded wait, and says why restarts will drop
// packets. Both ends reject a peer of another user (SO_PEERCRED), but
// rejected connections stay queued at the squatter; before connect was
// bounded, the first connect that found the queue full (backlog 1: the
// third) blocked until the squatter exited, and Prepare with it.
func TestPrepareWithSquattedKeeperSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		full bool // the squatter's backlog is full from the start
		log  string
	}{
		{"room", false, fmt.Sprintf("is held by a process of user %d", nobody)},
		{"full", true, "accepted no connection within"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			stopSquatter := h.squat(1, tc.full)
			b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
			if err != nil {
				t.Fatal(err)
			}
			h.track(b)
			prepared := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := b.Prepare(context.Background())
				prepared <- err
			}()
			// Bounded connects cost Prepare at most two keeperTimeouts
			// (asking for descriptors, telling the keeper to quit).
			const limit = 4*keeperTimeout + 5*time.Second
			select {
			case err := <-prepared:
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
			case <-time.After(limit):
				// Let Prepare finish before the namespaces go.
				stopSquatter()
				<-prepared
				t.Fatalf("Prepare had not returned %s after it started, with the keeper's socket held by a process of user %d that never accepts (backlog full: %v)", limit, nobody, tc.full)
			}
			t.Logf("Prepare took %s", time.Since(start).Round(time.Millisecond))
			h.b = b
			t.Cleanup(b.stopWorkers)
			for _, want := range []string{tc.log, "an agent restart will drop packets"} {
				if !h.logged(want) {
					t.Errorf("no log line says %q; logged:\n%s", want, strings.Join(h.logs, "\n"))
				}
			}
			if b.keeper != nil {
				t.Errorf("a keeper was started, with its name held by the squatter")
			}
			// Without a keeper the datapath still works.
			h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
			peer := h.udpFrom("198.18.0.2")
			if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
				t.Fatal(err)
			}
			expectReply(t, peer, 1)
		})
	}
}

// TestKeeperExitsWhenDeviceDeleted: `ip link del flannel0` ends the keeper
// and frees the sockets' port at once: what the README's way back to
// flanneld relies on. The keeper listens to link events for it; before, it
// noticed at its next check, up to keeperCheck (2 s) later, and a flanneld
// started meanwhile found its port taken. The agent is gone (its copies of
// the descriptors closed), and the keeper has just served a request, so it
// waits in its loop as a long-running keeper does. This keeper checks only
// every hour (keeperCheckEnv), so only the link event can free the port
// within the test's generous deadline.
func TestKeeperExitsWhenDeviceDeleted(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	h := newTestNet(t)
	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	h.track(b)
	if _, err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stopWorkers)
	if b.keeper == nil {
		t.Fatal("Prepare started no keeper")
	}
	b.fds.close()
	b.fds = nil
	if err := h.host.Do(func() error {
		k, ok, err := fetchKept(context.Background(), DeviceName)
		if !ok {
			return fmt.Errorf("the keeper did not answer: %v", err)
		}
		k.close()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	port := netip.AddrPortFrom(h.cfg.External.IfaceAddr, uint16(b.opts.Port)).String()
	free := func() bool {
		return h.host.Do(func() error {
			c, err := net.ListenPacket("udp4", port)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	}
	if free() {
		t.Fatalf("port %s is free while the keeper runs", port)
	}
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h.host.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	const deadline = 30 * time.Second
	for !free() {
		if time.Since(start) > deadline {
			t.Fatalf("port %s still taken %v after flannel0 was deleted: the keeper did not act on the link event (it checks on its own only every hour here)",
				port, deadline)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("port %s free %v after flannel0 was deleted", port, time.Since(start).Round(time.Microsecond))
	// The keeper's name goes with the port, not at the process's end: a
	// new agent's request is refused, not left to time out. (Under the
	// race detector, which make test uses, a process sleeps 1 s at exit.)
	if err := h.host.Do(func() error {
		if _, ok, err := fetchKept(context.Background(), DeviceName); ok || err != nil {
			return fmt.Errorf("a keeper still answers after its port was freed (err %v)", err)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// TestQuitKeeperSilentKeeper: a keeper that is alive but takes no notice
// (stopped with SIGSTOP, frozen with its cgroup: here a listener that never
// accepts, of our own user) has not quit. quitKeeper says so, and so does
// fetchKept; before, quitKeeper reported it gone after its timeout, and the
// agent attached new queues and sockets beside the ones it still held.
func TestQuitKeeperSilentKeeper(t *testing.T) {
	ns := nstest.New(t)
	var ln int
	if err := ns.Do(func() error {
		var err error
		if ln, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		if err := unix.Bind(ln, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)}); err != nil {
			return err
		}
		return unix.Listen(ln, 8)
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	for _, tc := range []struct {
		name string
		f    func() error
	}{
		{"quitKeeper", func() error {
			quit, err := quitKeeper(context.Background(), DeviceName)
			if quit {
				return errors.New("it confirmed")
			}
			return err
		}},
		{"fetchKept", func() error {
			k, ok, err := fetchKept(context.Background(), DeviceName)
			if ok {
				k.close()
				return errors.New("got descriptors")
			}
			return err
		}},
	} {
		start := time.Now()
		err := ns.Do(tc.f)
		took := time.Since(start)
		if err == nil || !strings.Contains(err.Error(), "did not answer") {
			t.Errorf("%s, with a keeper that never answers: %v after %v; want an error saying it did not answer", tc.name, err, took.Round(time.Millisecond))
		}
		// A bound on a hang, not on speed: each call waits keeperTimeout
		// for the silent keeper, and under -race on a busy 2-CPU machine
		// the rest can take seconds, so only a call that does not give up
		// on its timeout fails this.
		if took > 3*keeperTimeout {
			t.Errorf("%s took %v, more than 3×keeperTimeout (%v): it does not give up on a keeper that never answers", tc.name, took, keeperTimeout)
		}
	}
}

// TestQuitKeeperLetsGoFirst: a keeper told to quit closes its queues and
// sockets before it confirms, so that what the agent attaches next is not
// beside them. Before, it confirmed first and let go when it exited, which
// under the race detector is a second later. So with its name: before, a
// keeper started just after its bye found the name held (a second, under
// the race detector) and failed.
func TestQuitKeeperLetsGoFirst(t *testing.T) {
	h := newTestHost(t)
	h.stop()
	h.b.fds.close() // as the agent's exit would
	if err := h.host.Do(func() error {
		if quit, err := quitKeeper(context.Background(), DeviceName); !quit {
			return fmt.Errorf("the keeper did not confirm it quits: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := attachedQueues(t, h); n != 0 {
		t.Errorf("%d queues of %s still attached once the keeper confirmed it quits", n, DeviceName)
	}
	if err := h.host.Do(func() error { return bindExclusive(h.b.listenAddr()) }); err != nil {
		t.Errorf("the port is still held once the keeper confirmed it quits: %v", err)
	}
	// Its name too, for the keeper that replaces it (startKeeper waits
	// for it only briefly).
	if err := h.host.Do(func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Bind(fd, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)})
	}); err != nil {
		t.Errorf("the keeper's name is still held once it confirmed it quits: %v", err)
	}
}

// attachedQueues is how many queues of flannel0 are attached, by anyone.
func attachedQueues(t *testing.T, h *testHost) int {
	t.Helper()
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Flags&netlink.TUNTAP_MULTI_QUEUE == 0 {
		t.Fatalf("%s is %T (flags %v), not a multi-queue TUN device whose queues the kernel counts", DeviceName, l, tt.Flags)
	}
	return tt.Queues + tt.DisabledQueues
}

// bindExclusive binds a UDP socket to addr without SO_REUSEPORT: it fails
// while any other socket holds the port.
func bindExclusive(addr netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Bind(fd, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()})
}

// TestPrepareBesideStoppedKeeper: the agent restarts while its keeper is
// stopped (SIGSTOP; a frozen cgroup is alike). The keeper still holds
// flannel0's queues and the sockets; queues and sockets of a new agent
// beside them would lose what the kernel hands to the keeper's, until it
// runs again. So the start fails, naming the keeper and what to do, also
// once the keeper's queue of connections is full and a connect gets no
// answer at all. Resumed, the keeper hands everything over to the next
// start, also if an agent that gave up asked it to quit meanwhile. Before,
// Prepare started afresh beside it.
func TestPrepareBesideStoppedKeeper(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	pid := h.b.keeper.Process.Pid
	h.stop()
	h.b.fds.close() // as the agent's exit would
	kept := attachedQueues(t, h)
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
				t.Errorf("resume the keeper: %v", err)
			}
		}
	}
	t.Cleanup(resume) // before stopKeeper, registered earlier

	// An agent that gave up after asking it to quit, as one that found
	// its kept descriptors unusable does.
	if err := h.host.Do(func() error {
		c, ok, err := dialKeeper(context.Background(), DeviceName)
		if !ok {
			return fmt.Errorf("no keeper to ask: %v", err)
		}
		defer unix.Close(c)
		_, err = unix.Write(c, []byte{keeperQuit})
		return err
	}); err != nil {
		t.Fatal(err)
	}

	prepare := func(what string) {
		t.Helper()
		b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
		if err != nil {
			t.Fatal(err)
		}
		h.track(b)
		_, err = b.Prepare(context.Background())
		if err == nil {
			n := attachedQueues(t, h)
			b.fds.close()
			t.Fatalf("%s: Prepare succeeded beside the stopped keeper (pid %d): %d queues of %s were attached, %d of them the keeper's",
				what, pid, n, DeviceName, kept)
		}
		t.Logf("%s: %v", what, err)
		for _, want := range []string{fmt.Sprintf("pid %d", pid), fmt.Sprintf("kill -KILL %d", pid), fmt.Sprintf("kill -CONT %d", pid)} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: the error does not say %q", what, want)
			}
		}
		if n := attachedQueues(t, h); n != kept {
			t.Errorf("%s: %d queues of %s attached after the failed start, want the keeper's %d", what, n, DeviceName, kept)
		}
	}
	prepare("the keeper does not answer")

	// Fill the keeper's queue of connections, as failed starts do.
	var filler []int
	defer func() { closeAll(filler) }()
	if err := h.host.Do(func() error {
		for {
			c, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				return err
			}
			err = unix.Connect(c, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)})
			if errors.Is(err, unix.EAGAIN) {
				unix.Close(c)
				return nil
			}
			filler = append(filler, c)
			if err != nil {
				return err
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	prepare("the keeper's queue of connections is full")
	closeAll(filler)
	filler = nil

	// A packet sent meanwhile waits in the keeper's socket.
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 9), hostAddr); err != nil {
		t.Fatal(err)
	}
	resume()
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatalf("the resumed keeper did not hand its descriptors over")
	}
	h.reconcile(peers...)
	expectReply(t, peer, 9)
}

// keeperConnections counts the sockets in the host namespace bound to the
// keeper's name (/proc/net/unix): its listener, and each connection waiting
// in its queue, which the kernel names after it.
func (h *testHost) keeperConnections() int {
	h.t.Helper()
	var n int
	if err := h.host.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/unix")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 8 && f[7] == keeperAddr(DeviceName) {
				n++
			}
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return n
}

// TestStopWhileKeeperStopped: the agent is stopped (its context ends) while
// Prepare waits for an answer from a stopped keeper (SIGSTOP). Prepare
// returns at once with the context's error, which the agent takes for a
// clean stop, and attaches nothing beside the keeper. Before, it waited out
// keeperTimeout (2 s) and failed with the keeper's error, so the agent
// exited 1 two seconds after SIGTERM.
func TestStopWhileKeeperStopped(t *testing.T) {
	h := newTestHost(t)
	pid := h.b.keeper.Process.Pid
	h.stop()
	h.b.fds.close() // as the agent's exit would
	kept := attachedQueues(t, h)
	listening := h.keeperConnections()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Errorf("resume the keeper: %v", err)
		}
	})
	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	h.track(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	prepared := make(chan error, 1)
	go func() {
		_, err := b.Prepare(ctx)
		prepared <- err
	}()
	// Prepare waits once its connection is in the keeper's queue.
	for deadline := time.Now().Add(10 * time.Second); h.keeperConnections() == listening; {
		select {
		case err := <-prepared:
			t.Fatalf("Prepare returned before it asked the stopped keeper: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("Prepare did not connect to the keeper within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	stopped := time.Now()
	const limit = 500 * time.Millisecond
	select {
	case err = <-prepared:
	case <-time.After(limit):
		err = <-prepared
		t.Errorf("Prepare returned %s after its context ended, want within %s (it waited for the stopped keeper)",
			time.Since(stopped).Round(time.Millisecond), limit)
	}
	t.Logf("Prepare returned %s after its context ended: %v", time.Since(stopped).Round(time.Millisecond), err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Prepare cut short by a stop = %v, want the context's error (a clean stop)", err)
	}
	if n := attachedQueues(t, h); n != kept {
		t.Errorf("%d queues of %s attached after the stop, want the keeper's %d", n, DeviceName, kept)
	}
	if h.logged("starting afresh") || h.logged("making new ones") {
		t.Errorf("a stop during the wait for the keeper made new descriptors; logged:\n%s", strings.Join(h.logs, "\n"))
	}
}

// TestPortChangedAcrossRestart: the agent restarts with another port; the
// kept sockets do not fit, so the keeper is told to quit and everything is
// made anew, with nothing of the old keeper's left attached beside it.
func TestPortChangedAcrossRestart(t *testing.T) {
	h := newTestHost(t)
	h.stop()
	h.b.fds.close() // as the agent's exit would
	cfg := h.cfg
	nc := *cfg.Network
	nc.Backend = json.RawMessage(`{"Type":"udp","Port":18285}`)
	cfg.Network = &nc
	b, err := newBackend(cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	h.track(b)
	if _, err := b.Prepare(context.Background()); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	defer b.fds.close()
	if !h.logged("do not fit") {
		t.Errorf("the kept sockets on port %d were taken for port 18285", DefaultPort)
	}
	if n := attachedQueues(t, h); n != len(b.fds.tun) {
		t.Errorf("%d queues of %s attached, %d of them the new agent's", n, DeviceName, len(b.fds.tun))
	}
	if err := h.host.Do(func() error { return bindExclusive(netip.MustParseAddrPort("198.18.0.1:8285")) }); err != nil {
		t.Errorf("the old port is still held: %v", err)
	}
}
