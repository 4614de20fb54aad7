package udp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"golang.org/x/sys/unix"
)

// The descriptor keeper: a small process that holds the TUN queues and the
// UDP sockets while no agent does, so that an agent restart (SIGTERM or
// SIGKILL, an upgrade) delays packets instead of dropping them. While the
// keeper holds a queue, the kernel keeps it attached and queues packets in
// it (up to the device's txqueuelen); while it holds a socket, datagrams for
// our port wait in the socket's receive buffer (4 MiB). The next agent asks
// the keeper for the descriptors, reads what queued up and carries on.
// Without a keeper, the last close of a queue detaches it and the kernel
// drops every packet for the device until an agent attaches again.
//
// It plays the part of systemd's file descriptor store, which is not there
// under a DaemonSet or a plain supervisor.
//
//	agent (first start)                       keeper (setsid, its own session)
//	  open queues + sockets ── exec, fds 3.. ──▶ holds them; listens on
//	                                             @agentd-udp-keeper/flannel0
//	agent (restart) ── "g" ──────────────────▶ ── descriptors (SCM_RIGHTS) ──▶
//	  keeper of another binary (an upgrade), or more queues wanted: a new
//	  keeper over the agent's copies, then ── "q" ──▶ old exits; the
//	  agent binds the name for the new one (handOver, replaceKeeper)
//	agent (device recreated) ── "q" ─────────▶ exits; a new keeper starts
//	agent (running)  ◀── pidfd readable ──────── killed (OOM, kill, cgroup)
//	  Reconcile: a new keeper over the agent's copies (keeperWatch)
//	agent (no keeper: a start failed)
//	  Reconcile: tries again, from 1 s apart to 1 min (keeperRetry)
//
// The keeper does nothing else: it never reads a packet. It exits when told
// to ("q"; it closes the descriptors and its socket before it answers
// "bye", so that what the agent attaches next is not beside them, and a
// new keeper can take the name at once), or as soon as the device is
// deleted (it listens to link events, and also checks every keeperCheck).
// A keeper that does not answer (stopped, frozen with its cgroup) still
// holds them: the agent does not start beside it (Backend.fresh). Its
// socket is abstract, so it is per network namespace and goes with the
// keeper, and it serves only clients with its own user ID; the agent, in
// turn, talks only to a keeper with its own user ID. Any local user can bind
// the name first, though. Such a squatter never gets or hands in a
// descriptor, and costs the agent at most keeperTimeout per connect (the
// connect waits only while the squatter's queue of connections it never
// accepts is full); the agent then runs without a keeper, says so
// (keeperHeldError), and tries again now and then, asking the holder
// nothing (keeperretry.go).

// The exchange, and how it may change. A request is one message whose
// first byte says what is asked (keeperGet, keeperQuit); a keeper reads
// that byte and the kernel drops the rest of the message (SOCK_SEQPACKET),
// so a later agent may add there what it understands (the answer formats
// it reads, say) and a keeper of this version still answers in this
// version's format (TestKeeperRequestExtensible). The answer to keeperGet
// is "tun=N,udp=M" (kept.spec) with the N TUN queues, then the M UDP
// sockets; every later agent must accept it, since the keeper an upgraded
// agent meets is the old binary's (the agent replaces it, but only once it
// holds the descriptors it got from it: Backend.takeOver), and a later
// keeper may answer otherwise only to a request that says the agent reads
// it. An agent refuses an answer it does not wholly understand (a
// key it does not know, more than it reads, a count that does not match):
// it uses none of the descriptors, says what it got, and starts afresh
// (TestKeeperAnswerNotUnderstood). Nor does it take the answer's word for
// what it is handed: Backend.unfit asks the kernel which device each queue
// is of, with which flags, and where each socket is bound.
//
// Another agent on the host (one started with another --state-dir, which
// agentd.lock does not stop) never gets here while one runs: the running
// one holds a claim on the device (claim.go), and the second is refused
// before it asks the keeper anything.

// keeperEnv, in the environment, makes the agentd binary a keeper; its value
// says how many descriptors of each kind follow the listener (fd 3).
const keeperEnv = "AGENTD_UDP_KEEPER"

// keeperReplaceEnv, in the environment of a keeper, says that it replaces
// the keeper at the name, and that its listener does not listen yet: the
// agent that started it makes the old keeper quit and binds the name
// (replaceKeeper), then writes keeperTookName to the pipe that follows the
// descriptors and closes it. A keeper whose pipe ends without that word
// (its agent died: SIGKILL) finishes the hand-over itself (finishHandOver).
const keeperReplaceEnv = "AGENTD_UDP_KEEPER_REPLACE"

// keeperTookName is the agent's word to a replacing keeper: its listener
// listens on the name.
const keeperTookName = "listening"

const (
	keeperGet  = 'g'
	keeperQuit = 'q'
	// keeperBye is the answer to keeperQuit: the keeper has closed its
	// descriptors and exits.
	keeperBye = "bye"
	// keeperName is the keeper's argv[0], what ps -f and systemctl status
	// show.
	keeperName = "agentd-udp-keeper"
	// keeperComm is the keeper's process name (/proc/<pid>/comm): what
	// ps -e, top, pgrep, ss -p and systemd's "left-over process" line
	// show, at most the kernel's 15 bytes. It says what the process keeps
	// and not "agentd", so that pkill agentd and pgrep agentd, which match
	// a pattern in the name, find the agent alone: a restart by pkill
	// would end the keeper too and drop what it holds queued. Started as
	// /proc/self/exe (the agent's very binary, whatever replaced its file
	// since), the keeper is named "exe" until it says otherwise.
	keeperComm = DeviceName + "-keeper"
	// keeperTimeout bounds each exchange with a keeper.
	keeperTimeout = 2 * time.Second
	// keeperSlice is the longest one socket call of the agent's to a
	// keeper blocks: it waits out keeperTimeout in such slices, so that
	// a stop (the agent's context) ends the wait within one.
	keeperSlice = 20 * time.Millisecond
)

// keeperCheck is how often the keeper checks that its device is still
// there, besides at each link event. Only tests change it, in the keeper
// they run (the test binary), through keeperTestEnv.
var keeperCheck = 2 * time.Second

// keeperTestEnv is added to the environment of the keepers this process
// starts: nil, but in tests that run the keeper with other settings.
var keeperTestEnv []string

// kept is the set of descriptors a keeper holds: the TUN queues and the UDP
// sockets, in order.
type kept struct {
	tun, udp []int
}

func (k *kept) all() []int { return append(append([]int(nil), k.tun...), k.udp...) }

func (k *kept) close() { closeAll(k.all()) }

func (k *kept) spec() string { return fmt.Sprintf("tun=%d,udp=%d", len(k.tun), len(k.udp)) }

func parseSpec(s string) (ntun, nudp int, err error) {
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 64 {
			return 0, 0, fmt.Errorf("bad keeper spec %q", s)
		}
		switch k {
		case "tun":
			ntun = n
		case "udp":
			nudp = n
		default:
			return 0, 0, fmt.Errorf("bad keeper spec %q", s)
		}
	}
	if ntun == 0 || nudp == 0 {
		return 0, 0, fmt.Errorf("bad keeper spec %q", s)
	}
	return ntun, nudp, nil
}

// keeperAddr is the keeper's abstract socket for the device dev.
func keeperAddr(dev string) string { return "@agentd-udp-keeper/" + dev }

// IsKeeper reports whether this process was started as the udp backend's
// descriptor keeper; main then runs RunKeeper and nothing else.
func IsKeeper() bool { _, ok := os.LookupEnv(keeperEnv); return ok }

// RunKeeper is the keeper's whole program; it returns the exit status.
func RunKeeper() int {
	// Writing /proc/self/comm names the process (its main thread), from
	// whichever thread this runs on, as prctl(PR_SET_NAME) would not.
	// Where it cannot (a /proc mounted read-only), the name stays "exe".
	_ = os.WriteFile("/proc/self/comm", []byte(keeperComm), 0)
	// Nothing to reload, as for the agent (run/agentd's signals): a
	// habitual kill -HUP, or pkill -HUP -f agentd, which matches its
	// argv, must not end it. Ignored, not caught: no handler runs.
	signal.Ignore(syscall.SIGHUP)
	ntun, nudp, err := parseSpec(os.Getenv(keeperEnv))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	const ln = 3
	k := &kept{}
	for i := range ntun {
		k.tun = append(k.tun, ln+1+i)
	}
	for i := range nudp {
		k.udp = append(k.udp, ln+1+ntun+i)
	}
	if _, ok := os.LookupEnv(keeperReplaceEnv); ok {
		// The agent's pipe follows the descriptors kept.
		agent := os.NewFile(uintptr(ln+1+ntun+nudp), "agent")
		word, _ := io.ReadAll(io.LimitReader(agent, 64))
		agent.Close()
		if string(word) != keeperTookName {
			if err := finishHandOver(os.Args[1:], ln); err != nil {
				fmt.Fprintln(os.Stderr, err)
				k.close()
				unix.Close(ln)
				return 1
			}
		}
	}
	uid := os.Geteuid()
	// Link events wake the keeper, so that it exits as soon as the device
	// is deleted and frees the sockets' port (for a flanneld started next,
	// say). Without them (no socket), it checks every keeperCheck, as it
	// also does between events.
	links := linkEvents()
	defer unix.Close(links)
	// gone reports whether the device is gone, having let go of
	// everything if so. A deleted device leaves its queues detached
	// (EBADFD). The port and the name are freed now, not at the
	// process's end: an agent asking meanwhile is refused rather than
	// left waiting.
	gone := func() bool {
		if _, _, err := tunName(k.tun[0]); err == nil {
			return false
		}
		k.close()
		unix.Close(ln)
		return true
	}
	// A device deleted before the subscription above (while this process
	// started) raised no event for it: look once now.
	if gone() {
		return 0
	}
	for {
		fds := []unix.PollFd{{Fd: ln, Events: unix.POLLIN}, {Fd: int32(links), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, int(keeperCheck/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return 1
		}
		if fds[1].Revents != 0 {
			drain(links)
		}
		if n == 0 || err != nil || fds[1].Revents != 0 {
			if gone() {
				return 0
			}
			if fds[0].Revents == 0 {
				continue
			}
		}
		c, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err != nil {
			continue
		}
		quit := serveKeeperClient(c, uid, k, ln)
		unix.Close(c)
		if quit {
			return 0
		}
	}
}

// finishHandOver takes the name for a replacing keeper whose agent died
// during the hand-over (its pipe ended without keeperTookName), on the
// keeper's listener ln, for the device args names (its argv after
// argv[0]). The agent may have left ln listening, or bound, or the old
// keeper at the name: this keeper then tells it to quit (takeName). A
// listen succeeds on a socket bound or listening already, and fails on
// one not bound (EINVAL), whose name Getsockname would not tell apart from
// the abstract name "@".
func finishHandOver(args []string, ln int) error {
	if len(args) != 1 {
		return fmt.Errorf("a descriptor keeper taking over wants one device argument, not %q", args)
	}
	if unix.Listen(ln, 8) == nil {
		return nil
	}
	return takeName(args[0], ln)
}

// takeName makes the keeper of dev quit, and binds and listens on its name
// in its place, on the socket ln of a keeper that holds the descriptors
// already (replaceKeeper), so that there is no moment in which none does:
// the old keeper closes its copies only once the new one has its own. It
// waits for the name as startKeeper does: up to keeperTimeout for each
// step of the exchange with the old keeper, and half a second for the name
// once it has let go.
func takeName(dev string, ln int) error {
	if _, err := quitKeeper(context.Background(), dev); err != nil {
		return err
	}
	addr := &unix.SockaddrUnix{Name: keeperAddr(dev)}
	var err error
	for range 50 {
		if err = unix.Bind(ln, addr); !errors.Is(err, unix.EADDRINUSE) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("bind the descriptor keeper socket %s: %w", addr.Name, err)
	}
	if err := unix.Listen(ln, 8); err != nil {
		return fmt.Errorf("listen on the descriptor keeper socket: %w", err)
	}
	return nil
}

// linkEvents returns a non-blocking rtnetlink socket subscribed to link
// events in the keeper's network namespace, or -1 (poll ignores it) when
// it cannot have one.
func linkEvents() int {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_ROUTE)
	if err != nil {
		return -1
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}); err != nil {
		unix.Close(fd)
		return -1
	}
	return fd
}

// drain reads what the link-event socket holds; the events themselves do
// not matter, only that the device may be gone. An overrun (ENOBUFS) ends
// it like an empty socket does.
func drain(fd int) {
	var buf [8192]byte
	for {
		if _, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_DONTWAIT); err != nil && !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// serveKeeperClient answers one request; it reports whether the keeper must
// exit. Told to quit, it closes the descriptors and the listener ln before
// it answers: the keeper that replaces it binds the name at once.
func serveKeeperClient(c, uid int, k *kept, ln int) bool {
	cred, err := unix.GetsockoptUcred(c, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil || int(cred.Uid) != uid {
		return false
	}
	tv := unix.NsecToTimeval(keeperTimeout.Nanoseconds())
	_ = unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptTimeval(c, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	var req [1]byte
	var n int
	if err := noEINTR(func() (err error) { n, err = unix.Read(c, req[:]); return err }); err != nil || n != 1 {
		return false
	}
	switch req[0] {
	case keeperGet:
		_ = noEINTR(func() error { return unix.Sendmsg(c, []byte(k.spec()), unix.UnixRights(k.all()...), nil, 0) })
		return false
	case keeperQuit:
		if hungUp(c) {
			// An agent that asked while this keeper was stopped,
			// and gave up: a later one may be waiting to take the
			// descriptors over.
			return false
		}
		k.close()
		unix.Close(ln)
		_ = noEINTR(func() error { _, err := unix.Write(c, []byte(keeperBye)); return err })
		return true
	}
	return false
}

// hungUp reports whether the client on c has closed its end.
func hungUp(c int) bool {
	fds := []unix.PollFd{{Fd: int32(c), Events: unix.POLLRDHUP}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0 && fds[0].Revents&(unix.POLLHUP|unix.POLLRDHUP) != 0
}

// noEINTR calls f again while it fails with EINTR; the keeper's calls need
// it (the agent's, within). Both ends of the keeper's socket set
// SO_RCVTIMEO and SO_SNDTIMEO, and a socket call with a timeout is not
// restarted after a signal handler ran, whatever SA_RESTART says
// (signal(7)); Go's runtime signals its own threads (SIGURG, to preempt
// goroutines), so without this a request now and then failed half-way and
// the agent started afresh, dropping packets.
func noEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// keeperHeldError says that the keeper's name is held by a process that is
// no keeper of ours: one of another user, or one that accepts no
// connection. There is no keeper then, and no way to start one.
type keeperHeldError struct {
	addr string
	uid  int // the holder's, or -1 when it accepted no connection
}

func (e *keeperHeldError) Error() string {
	if e.uid < 0 {
		return fmt.Sprintf("the descriptor keeper socket %s accepted no connection within %s: a process of another user may hold it without serving", e.addr, keeperTimeout)
	}
	return fmt.Sprintf("the descriptor keeper socket %s is held by a process of user %d, not by a keeper of ours (user %d)", e.addr, e.uid, os.Geteuid())
}

// keeperStuckError says that a keeper of ours (a process of our user ID
// listens on its socket) took no notice of a request within keeperTimeout:
// it is stopped (SIGSTOP), frozen with its cgroup, or stuck. It still holds
// the descriptors, and hands them over or quits only once it runs again.
type keeperStuckError struct {
	addr string
	err  error
}

func (e *keeperStuckError) Error() string {
	return fmt.Sprintf("the descriptor keeper on %s did not answer within %s (stopped, or frozen?): %v", e.addr, keeperTimeout, e.err)
}

func (e *keeperStuckError) Unwrap() error { return e.err }

// answered turns the error of a read or write on a connection to the
// keeper of dev into a *keeperStuckError when the keeper let the timeout
// pass (it has not accepted the connection, or not answered).
func answered(dev string, err error) error {
	if errors.Is(err, unix.EAGAIN) {
		return &keeperStuckError{addr: keeperAddr(dev), err: err}
	}
	return err
}

// dialKeeper connects to the keeper of dev; ok is false when none listens.
// It waits at most keeperTimeout, or until ctx ends: a connect to a
// listener whose queue is full waits for room, which a process that never
// accepts never makes.
func dialKeeper(ctx context.Context, dev string) (fd int, ok bool, err error) {
	fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, false, fmt.Errorf("keeper socket: %w", err)
	}
	addr := keeperAddr(dev)
	sa := &unix.SockaddrUnix{Name: addr}
	err = within(ctx, fd, unix.SO_SNDTIMEO, func() error { return unix.Connect(fd, sa) })
	switch {
	case errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT):
		unix.Close(fd)
		return -1, false, nil
	case errors.Is(err, unix.EAGAIN):
		unix.Close(fd)
		return -1, false, &keeperHeldError{addr: addr, uid: -1}
	case err != nil:
		unix.Close(fd)
		return -1, false, fmt.Errorf("connect to the descriptor keeper: %w", err)
	}
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		unix.Close(fd)
		return -1, false, fmt.Errorf("the descriptor keeper's credentials: %w", err)
	}
	if int(cred.Uid) != os.Geteuid() {
		unix.Close(fd)
		return -1, false, &keeperHeldError{addr: addr, uid: int(cred.Uid)}
	}
	return fd, true, nil
}

// within makes f, a call on the blocking AF_UNIX socket fd that Linux
// bounds by its option opt (SO_SNDTIMEO: a connect waiting for room in the
// listener's queue, a send; SO_RCVTIMEO: a receive), wait at most
// keeperTimeout in all, and no longer than until ctx ends: then it returns
// EAGAIN, or ctx's error. Each call is given a keeperSlice at most and made
// again when that passes (EAGAIN: nothing was sent or received, and a
// connect that timed out left the socket unconnected), and when a signal
// cuts it short (EINTR: a socket call with a timeout is not restarted,
// whatever SA_RESTART says, and Go's runtime signals its own threads).
func within(ctx context.Context, fd, opt int, f func() error) error {
	deadline := time.Now().Add(keeperTimeout)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return unix.EAGAIN
		}
		// left > 0 rounds up to at least 1µs: a zero timeout would be none.
		tv := unix.NsecToTimeval(min(left, keeperSlice).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, opt, &tv); err != nil {
			return fmt.Errorf("set a socket timeout: %w", err)
		}
		if err := f(); !errors.Is(err, unix.EINTR) && !errors.Is(err, unix.EAGAIN) {
			return err
		}
	}
}

// fetchKept asks the keeper of dev for its descriptors (new ones in this
// process, close-on-exec); ok is false when there is no keeper. It gives
// up when ctx ends, with ctx's error.
func fetchKept(ctx context.Context, dev string) (k *kept, ok bool, err error) {
	c, ok, err := dialKeeper(ctx, dev)
	if !ok {
		return nil, false, err
	}
	defer unix.Close(c)
	if err := within(ctx, c, unix.SO_SNDTIMEO, func() error { _, err := unix.Write(c, []byte{keeperGet}); return err }); err != nil {
		return nil, false, fmt.Errorf("ask the descriptor keeper: %w", answered(dev, err))
	}
	buf := make([]byte, 64)
	oob := make([]byte, unix.CmsgSpace(4*2*64))
	var n, oobn, flags int
	err = within(ctx, c, unix.SO_RCVTIMEO, func() (err error) {
		n, oobn, flags, _, err = unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("read the descriptor keeper's answer: %w", answered(dev, err))
	}
	var fds []int
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err == nil {
		for _, m := range msgs {
			if got, err := unix.ParseUnixRights(&m); err == nil {
				fds = append(fds, got...)
			}
		}
	}
	// An answer longer than buf, or with more descriptors than oob has
	// room for, was cut short: what is left may parse, but is not what
	// the keeper said.
	cut := ""
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		cut = " (cut short: more than this agent reads)"
	}
	ntun, nudp, err := parseSpec(string(buf[:n]))
	if err != nil || cut != "" || len(fds) != ntun+nudp {
		closeAll(fds)
		return nil, false, fmt.Errorf("the descriptor keeper answered %q%s with %d descriptors, which this agent does not understand (a keeper of another agentd version?)",
			buf[:n], cut, len(fds))
	}
	// tun's capacity ends where udp begins: an append to it (grow) must
	// not write over the sockets.
	return &kept{tun: fds[:ntun:ntun], udp: fds[ntun:]}, true, nil
}

// keptQueues asks the keeper of dev for its descriptors and counts the
// queues of dev among them: 0 when no keeper of ours answers within
// keeperTimeout (or before ctx ends). What it hands over are copies,
// closed here; it holds them on. It is for a keeper that does not show its
// descriptors in /proc (keeperPids).
func keptQueues(ctx context.Context, dev string) int {
	k, ok, err := fetchKept(ctx, dev)
	if !ok || err != nil {
		return 0
	}
	defer k.close()
	n := 0
	for _, fd := range k.tun {
		if name, _, err := tunName(fd); err == nil && name == dev {
			n++
		}
	}
	return n
}

// quitKeeper makes the keeper of dev, if any, exit. quit reports that one
// confirmed it, having let go of its descriptors (one of an agentd before
// that lets go as it exits, just after), or closed the connection
// unanswered, as one does that exits (told by another, or its device
// gone). A keeper that does not answer is a *keeperStuckError; with
// neither, no keeper listens. It gives up when ctx ends, with ctx's error.
func quitKeeper(ctx context.Context, dev string) (quit bool, err error) {
	c, ok, err := dialKeeper(ctx, dev)
	if !ok {
		return false, err
	}
	defer unix.Close(c)
	if err := within(ctx, c, unix.SO_SNDTIMEO, func() error { _, err := unix.Write(c, []byte{keeperQuit}); return err }); err != nil {
		return false, fmt.Errorf("tell the descriptor keeper to exit: %w", answered(dev, err))
	}
	var b [8]byte
	var n int
	err = within(ctx, c, unix.SO_RCVTIMEO, func() (err error) { n, err = unix.Read(c, b[:]); return err })
	switch {
	case errors.Is(err, unix.ECONNRESET) || err == nil && n == 0:
		return true, nil
	case err != nil:
		return false, fmt.Errorf("the descriptor keeper's answer to exit: %w", answered(dev, err))
	case string(b[:n]) != keeperBye:
		return false, fmt.Errorf("the descriptor keeper answered %q to exit, not %q", b[:n], keeperBye)
	}
	return true, nil
}

// keeperPids returns the pids of the keepers of dev in this thread's
// network namespace, as far as /proc shows them (in our PID namespace).
//
// A keeper of our user ID with capabilities this process lacks (one that
// an agent started before agentd.service bounded its capabilities, met by
// the agent after the unit's upgrade) does not show its ns/net link, its
// descriptors or its binary to this process: reading them is a ptrace
// access check, which wants the reader's permitted capabilities to include
// the target's, or CAP_SYS_PTRACE. Its network namespace's /proc/<pid>/net
// files are not checked so: such a keeper is in ours when its net/unix is
// the very file that ours is (sameNetns).
func keeperPids(dev string) []int {
	self, err := os.Readlink("/proc/thread-self/ns/net")
	if err != nil {
		return nil
	}
	return sockclaim.ProcPids(func(dir string) bool {
		if cmd, err := os.ReadFile(dir + "/cmdline"); err != nil || !isKeeperCmdline(cmd, dev) {
			return false
		}
		ns, err := os.Readlink(dir + "/ns/net")
		if errors.Is(err, fs.ErrPermission) {
			return ownedByUs(dir) && sameNetns(dir)
		}
		return err == nil && ns == self
	})
}

// isKeeperCmdline reports whether cmdline, the content of
// /proc/<pid>/cmdline, is that of a keeper of dev (spawnKeeperOf's
// arguments, each ended by a NUL).
func isKeeperCmdline(cmdline []byte, dev string) bool {
	return string(cmdline) == keeperName+"\x00"+dev+"\x00"
}

// ownedByUs reports whether the process of /proc directory dir has our
// effective user ID.
func ownedByUs(dir string) bool {
	var st unix.Stat_t
	return unix.Stat(dir, &st) == nil && int(st.Uid) == os.Geteuid()
}

// sameNetns reports whether the process of /proc directory dir is in this
// thread's network namespace, without the ptrace access check of its
// ns/net link: each network namespace has its own /proc/net files (entries
// of its own, each with an inode number of its own while it lives), and
// /proc/<pid>/net shows those of the process's namespace to any reader.
func sameNetns(dir string) bool {
	var ours, theirs unix.Stat_t
	return unix.Stat("/proc/thread-self/net/unix", &ours) == nil && unix.Stat(dir+"/net/unix", &theirs) == nil &&
		ours.Dev == theirs.Dev && ours.Ino == theirs.Ino
}

// capsBeyondOurs returns the permitted capabilities of process pid that
// this process lacks (0 when it has them all, or /proc does not say), from
// /proc/<pid>/status, which any process may read.
func capsBeyondOurs(pid int) uint64 {
	theirs, ok := permittedCaps("/proc/" + strconv.Itoa(pid) + "/status")
	ours, ok2 := permittedCaps("/proc/self/status")
	if !ok || !ok2 {
		return 0
	}
	return theirs &^ ours
}

// permittedCaps reads CapPrm of a /proc status file.
func permittedCaps(status string) (uint64, bool) {
	b, err := os.ReadFile(status)
	if err != nil {
		return 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "CapPrm:"); ok {
			c, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return c, err == nil
		}
	}
	return 0, false
}

// keeperHolding returns the pid of the keeper of dev that holds sock, a
// UDP socket it handed over (the same open file), or 0 when /proc does not
// tell one. Only one keeper holds it, but another may be about: one told
// to quit that has let go of everything and not yet exited (a second, under
// the race detector), which keeperPids alone cannot tell apart.
func keeperHolding(dev string, sock int) int {
	pids := keeperPids(dev)
	switch len(pids) {
	case 0:
		return 0
	case 1:
		return pids[0]
	}
	var st unix.Stat_t
	if err := unix.Fstat(sock, &st); err != nil {
		return 0
	}
	want := map[string]bool{fmt.Sprintf("socket:[%d]", st.Ino): true}
	holder := 0
	for _, pid := range pids {
		if sockclaim.HoldsAny("/proc/"+strconv.Itoa(pid), want) {
			if holder != 0 {
				return 0
			}
			holder = pid
		}
	}
	return holder
}

// runsOurBinary reports whether process pid runs the binary this process
// runs: the same file (device and inode), under whatever path, also when an
// upgrade has replaced (unlinked) it since; a process keeps its binary's
// inode in use, so no other file gets that number while it runs. exe is
// what /proc says pid runs, for the log ("/usr/bin/agentd (deleted)" once
// replaced).
//
// A keeper with capabilities this process lacks does not show its binary
// (keeperPids): it is an agent's of before agentd.service bounded them,
// and is taken for another binary's, to be replaced (exe says why). Left,
// it would hold every capability of root on, beside an agent bounded to
// two, for as long as the device lives, and no later agent could see
// which binary it runs or what it holds.
func runsOurBinary(pid int) (same bool, exe string, err error) {
	var ours, theirs unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &ours); err != nil {
		return false, "", fmt.Errorf("stat this process's binary: %w", err)
	}
	link := "/proc/" + strconv.Itoa(pid) + "/exe"
	if err := unix.Stat(link, &theirs); err != nil {
		if more := capsBeyondOurs(pid); errors.Is(err, fs.ErrPermission) && more != 0 {
			return false, fmt.Sprintf("not shown to this agent: it has capabilities this agent lacks (%#x; an agentd started it before agentd.service bounded them?)", more), nil
		}
		return false, "", fmt.Errorf("stat the binary of pid %d: %w", pid, err)
	}
	exe, _ = os.Readlink(link)
	return ours.Dev == theirs.Dev && ours.Ino == theirs.Ino, exe, nil
}

// startKeeper starts a keeper for dev holding (its own copies of) k's
// descriptors, in a session of its own so that a signal to the agent's
// process group does not reach it. The returned command is the caller's to
// reap once the keeper has been told to quit. A process that holds the
// keeper's name is taken for a keeper of an earlier generation: it is told
// to quit, and the name waited for (up to keeperTimeout to reach it, half a
// second for the name), or until ctx ends.
func startKeeper(ctx context.Context, dev string, k *kept) (*exec.Cmd, error) {
	return spawnKeeper(ctx, dev, k, true)
}

// startKeeperIfFree starts a keeper as startKeeper does, unless another
// process holds the keeper's name: then it fails at once, asking nothing
// of the holder. It is for the tries again while there is no keeper (a
// squatter on the name may never answer, and each try would cost
// Reconcile a wait). So it waits for nothing, and takes no context.
func startKeeperIfFree(dev string, k *kept) (*exec.Cmd, error) {
	return spawnKeeper(context.Background(), dev, k, false)
}

// spawnKeeper is startKeeper, and with evict false startKeeperIfFree.
func spawnKeeper(ctx context.Context, dev string, k *kept, evict bool) (*exec.Cmd, error) {
	// /proc/self/exe is this very binary even after an upgrade replaced
	// the file it was started from.
	return spawnKeeperOf(ctx, "/proc/self/exe", dev, k, evict)
}

// spawnKeeperOf is spawnKeeper of the binary exe: tests start keepers of
// another agentd binary with it, as an older agent would have.
func spawnKeeperOf(ctx context.Context, exe, dev string, k *kept, evict bool) (*exec.Cmd, error) {
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("descriptor keeper socket: %w", err)
	}
	defer unix.Close(ln)
	addr := &unix.SockaddrUnix{Name: keeperAddr(dev)}
	err = unix.Bind(ln, addr)
	if errors.Is(err, unix.EADDRINUSE) && !evict {
		return nil, fmt.Errorf("bind the descriptor keeper socket %s: %w (another process holds the name; ss -xlp | grep %s shows which)",
			addr.Name, err, keeperName)
	}
	if errors.Is(err, unix.EADDRINUSE) {
		// A keeper from an earlier generation still runs.
		if _, qerr := quitKeeper(ctx, dev); qerr != nil {
			return nil, qerr
		}
		for range 50 {
			if cerr := ctx.Err(); cerr != nil {
				return nil, fmt.Errorf("wait for the old descriptor keeper to let go of %s: %w", addr.Name, cerr)
			}
			if err = unix.Bind(ln, addr); !errors.Is(err, unix.EADDRINUSE) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("bind the descriptor keeper socket %s: %w", addr.Name, err)
	}
	if err := unix.Listen(ln, 8); err != nil {
		return nil, fmt.Errorf("listen on the descriptor keeper socket: %w", err)
	}
	return execKeeper(exe, dev, ln, k, nil)
}

// replaceKeeper starts a keeper for dev holding (its own copies of) k's
// descriptors in place of the keeper at the name, a process of an earlier
// agent: the new keeper has its copies from its start, and only then is
// the old one told to quit and the name taken (takeName), on the new
// keeper's listener, which this process shares until it returns. So some
// keeper holds them at every moment, whenever the agent is SIGKILLed:
// before the new one runs, the old one does; after, the new one does, and
// finishes the hand-over itself if the agent dies before its word
// (keeperReplaceEnv). When the name cannot be taken (the old keeper did
// not answer: stopped, frozen) the new keeper is killed, and the old one
// holds on to its copies.
func replaceKeeper(dev string, k *kept) (*exec.Cmd, error) {
	ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("descriptor keeper socket: %w", err)
	}
	defer unix.Close(ln)
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start the descriptor keeper: %w", err)
	}
	defer w.Close()
	cmd, err := execKeeper("/proc/self/exe", dev, ln, k, r)
	r.Close()
	if err != nil {
		return nil, err
	}
	err = takeName(dev, ln)
	if err == nil {
		_, err = w.WriteString(keeperTookName)
	}
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("the new descriptor keeper (pid %d) could not take %s over: %w", cmd.Process.Pid, keeperAddr(dev), err)
	}
	return cmd, nil
}

// execKeeper starts the keeper binary exe for dev over the listener ln and
// k's descriptors (copies of them), and, with agent, a replacing keeper
// (keeperReplaceEnv) that waits for the word on agent, a pipe's read end,
// which stays the caller's to close.
func execKeeper(exe, dev string, ln int, k *kept, agent *os.File) (*exec.Cmd, error) {
	// ExtraFiles become fds 3, 4, …; each is a dup that is closed here once
	// the keeper has its own.
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	for _, fd := range append([]int{ln}, k.all()...) {
		dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("start the descriptor keeper: dup: %w", err)
		}
		files = append(files, os.NewFile(uintptr(dup), "kept"))
	}
	env := append([]string{keeperEnv + "=" + k.spec()}, keeperTestEnv...)
	extra := files
	if agent != nil {
		env = append(env, keeperReplaceEnv+"=1")
		extra = append(slices.Clip(files), agent)
	}
	cmd := &exec.Cmd{
		Path:        exe,
		Args:        []string{keeperName, dev},
		Env:         env,
		Dir:         "/",
		ExtraFiles:  extra,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start the descriptor keeper %s: %w", exe, err)
	}
	return cmd, nil
}

// keeperWatch notices that a keeper process has exited while the agent
// runs (killed: by the OOM killer, by hand, by a service manager that ends
// the whole cgroup), so that Reconcile can start a new one over the same
// descriptors; without it, the next agent restart would drop everything in
// flight, and nothing would say so. It waits on a pidfd of the keeper in
// Go's poller (no thread, and no system call on Reconcile's path): dead is
// set and wake called once the process has exited. Where it has no pidfd
// (Linux before 5.3, or the keeper's pid is not known), poll is set and
// Reconcile asks keeperListens instead, at each pass.
type keeperWatch struct {
	pid  int
	dead atomic.Bool
	poll bool
	f    *os.File        // the pidfd, nil with poll
	rc   syscall.RawConn // f's, for exited
	done chan struct{}   // closed when the waiting goroutine has returned
}

// watchKeeper starts watching the keeper with pid (0: unknown); wake is
// called (from another goroutine) once it has exited.
func watchKeeper(pid int, wake func()) *keeperWatch {
	w := &keeperWatch{pid: pid}
	if pid <= 0 {
		w.poll = true
		return w
	}
	fd, err := unix.PidfdOpen(pid, 0)
	switch {
	case errors.Is(err, unix.ESRCH):
		w.dead.Store(true) // gone already
		return w
	case err != nil:
		w.poll = true
		return w
	}
	// Non-blocking, so that os.NewFile hands it to Go's poller, which
	// waits for it to become readable: the process has exited.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		w.poll = true
		return w
	}
	w.f = os.NewFile(uintptr(fd), "keeper-pidfd")
	rc, err := w.f.SyscallConn()
	if err != nil {
		w.f.Close()
		w.f, w.poll = nil, true
		return w
	}
	w.rc, w.done = rc, make(chan struct{})
	go func() {
		defer close(w.done)
		err := rc.Read(pidfdReadable)
		if err == nil { // else stop closed the pidfd
			w.dead.Store(true)
			wake()
		}
	}()
	return w
}

// pidfdReadable reports whether the pidfd fd is readable: its process has
// exited. It does not wait.
func pidfdReadable(fd uintptr) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0
}

// exited reports whether the watched keeper has exited, as far as its
// pidfd tells without waiting: also just before the waiting goroutine says
// so (dead). It is false with poll, and after stop.
func (w *keeperWatch) exited() bool {
	if w.dead.Load() {
		return true
	}
	gone := false
	if w.rc != nil {
		_ = w.rc.Control(func(fd uintptr) { gone = pidfdReadable(fd) })
	}
	return gone
}

// stop ends the watch and waits for its goroutine; a nil watch is none.
func (w *keeperWatch) stop() {
	if w == nil || w.f == nil {
		return
	}
	w.f.Close() // wakes the goroutine's Read with an error
	<-w.done
}

// keeperListens reports whether a process listens on the keeper socket of
// dev, in this thread's network namespace; it never waits: a listener
// whose queue is full (a keeper that is stopped) counts as listening.
func keeperListens(dev string) bool {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return true // cannot tell; assume the best, as before
	}
	defer unix.Close(fd)
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: keeperAddr(dev)})
	return !errors.Is(err, unix.ECONNREFUSED) && !errors.Is(err, unix.ENOENT)
}
