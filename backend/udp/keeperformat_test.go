package udp

// The keeper's exchange across versions: a keeper of another version, or
// an agent of a later one.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// keptQuit takes the descriptors the keeper in the host namespace holds and
// has it quit, as an agent taking them over does, so that a fake keeper can
// serve them or the agent's own copies can be the only ones.
func (h *testHost) keptQuit() *kept {
	h.t.Helper()
	var k *kept
	if err := h.host.Do(func() (err error) {
		var ok bool
		if k, ok, err = fetchKept(context.Background(), DeviceName); !ok {
			return fmt.Errorf("no keeper answers (err %v)", err)
		}
		if quit, err := quitKeeper(context.Background(), DeviceName); !quit {
			return fmt.Errorf("the keeper did not quit: %v", err)
		}
		return nil
	}); err != nil {
		h.t.Fatal(err)
	}
	return k
}

// fakeKeeper serves the keeper's name in the host namespace as a keeper of
// another version might: it answers every get with answer and fds, and a
// quit by closing fds, saying bye and exiting (its name goes with it).
func (h *testHost) fakeKeeper(answer string, fds []int) {
	h.t.Helper()
	h.fakeKeeperQuitting(answer, fds, nil)
}

// fakeKeeperQuitting is fakeKeeper calling onQuit, if not nil, once it has
// closed fds at a quit, before it says bye.
func (h *testHost) fakeKeeperQuitting(answer string, fds []int, onQuit func()) {
	h.t.Helper()
	var ln int
	if err := h.host.Do(func() (err error) {
		if ln, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		// The keeper it replaces lets go of the name as it exits.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
			err := unix.Bind(ln, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)})
			if err == nil {
				break
			}
			if !errors.Is(err, unix.EADDRINUSE) || time.Now().After(deadline) {
				unix.Close(ln)
				return err
			}
		}
		return unix.Listen(ln, 8)
	}); err != nil {
		h.t.Fatal(err)
	}
	var mu sync.Mutex
	closed := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			unix.Close(ln)
			closed = true
		}()
		for {
			c, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return // shut down
			}
			var req [64]byte
			n, _ := unix.Read(c, req[:])
			switch {
			case n > 0 && req[0] == keeperGet:
				_ = unix.Sendmsg(c, []byte(answer), unix.UnixRights(fds...), nil, 0)
			case n > 0 && req[0] == keeperQuit:
				closeAll(fds)
				if onQuit != nil {
					onQuit()
				}
				_, _ = unix.Write(c, []byte(keeperBye))
				unix.Close(c)
				return
			}
			unix.Close(c)
		}
	}()
	h.t.Cleanup(func() {
		mu.Lock()
		if !closed {
			_ = unix.Shutdown(ln, unix.SHUT_RDWR) // wakes Accept4
		}
		mu.Unlock()
		<-done
	})
}

// TestKeeperAnswerNotUnderstood: the keeper is of another version and
// answers what this agent does not fully understand, with descriptors of
// the device. The agent uses none of them: it says what it got and starts
// afresh, after the keeper has let go of them. A key it does not know is
// refused; so is an answer longer than it reads, of which it saw only a
// part. Before, a part that parsed was taken for the whole answer.
func TestKeeperAnswerNotUnderstood(t *testing.T) {
	for _, tc := range []struct{ name, answer string }{
		{"unknown key", "tun=2,udp=2,v=2"},
		// 64 bytes that parse, then more.
		{"longer", "tun=2,udp=" + strings.Repeat("0", 53) + "2,dev=flannel1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			h.queues = 2
			h.start()
			h.exit()
			h.fakeKeeper(tc.answer, h.keptQuit().all())
			h.start()
			if h.logged("took the device and sockets over") {
				t.Fatalf("the agent took over descriptors handed with %q", tc.answer)
			}
			if !h.logged("cannot use the descriptor keeper; starting afresh") || !h.logged(tc.answer[:15]) {
				t.Errorf("no log line says the keeper's answer was not understood, and what it was; logged:\n%s", h.logText())
			}
			if n := attachedQueues(t, h); n != len(h.b.fds.tun) {
				t.Errorf("%d queues of %s attached, %d of them the agent's", n, DeviceName, len(h.b.fds.tun))
			}
			if h.b.keeper == nil {
				t.Errorf("no keeper of the agent's own; logged:\n%s", h.logText())
			}
		})
	}
}

// TestKeeperRequestExtensible: a request is one byte, and a keeper ignores
// what follows it in the same message. So an agent of a later version can
// add there what it understands (a later answer format), and a keeper of
// this version still answers a get in the format of this one, which every
// later agent must still accept.
func TestKeeperRequestExtensible(t *testing.T) {
	h := newTestHost(t)
	if err := h.host.Do(func() error {
		c, ok, err := dialKeeper(context.Background(), DeviceName)
		if !ok {
			return fmt.Errorf("no keeper (err %v)", err)
		}
		defer unix.Close(c)
		if _, err := unix.Write(c, []byte("g,formats=1.2")); err != nil {
			return err
		}
		buf := make([]byte, 64)
		oob := make([]byte, unix.CmsgSpace(4*2*64))
		n, oobn, _, _, err := unix.Recvmsg(c, buf, oob, unix.MSG_CMSG_CLOEXEC)
		if err != nil {
			return err
		}
		var fds []int
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		for _, m := range msgs {
			got, _ := unix.ParseUnixRights(&m)
			fds = append(fds, got...)
		}
		defer closeAll(fds)
		if got, want := string(buf[:n]), h.b.fds.spec(); got != want || len(fds) != len(h.b.fds.all()) {
			return fmt.Errorf("answered %q with %d descriptors, want %q with %d", got, len(fds), want, len(h.b.fds.all()))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
