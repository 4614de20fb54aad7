package udp

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"golang.org/x/sys/unix"
)

// TestKeeperHandOverHeldThroughout: an agent that hands the descriptors it
// took over to a keeper of its own (here: more CPUs; an upgrade replaces a
// keeper of another binary the same way) has that keeper hold them before
// the old keeper lets go of its copies: a SIGKILL of the agent at any
// moment leaves a keeper holding flannel0's queues and the UDP sockets. The
// old keeper here is a fake that looks, as it lets go, for processes other
// than this one (the agent) holding the UDP socket. Before, the agent told
// the old keeper to quit and only then started the new one: at that moment
// the agent's copies were the only ones, and on the test cluster 6 of 8
// agents SIGKILLed as the old keeper exited left no keeper (a ping every
// 10 ms lost 62 of 621).
func TestKeeperHandOverHeldThroughout(t *testing.T) {
	h, peers := oneQueueExited(t)
	k := h.keptQuit()
	var st unix.Stat_t
	if err := unix.Fstat(k.udp[0], &st); err != nil {
		t.Fatal(err)
	}
	sock := map[string]bool{fmt.Sprintf("socket:[%d]", st.Ino): true}
	// What the old keeper saw as it let go, once it was told to quit.
	seen := make(chan []int, 1)
	h.fakeKeeperQuitting(k.spec(), k.all(), func() {
		seen <- sockclaim.ProcPids(func(dir string) bool {
			return dir != fmt.Sprintf("/proc/%d", os.Getpid()) && sockclaim.HoldsAny(dir, sock)
		})
	})

	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	b.queues = 2
	h.track(b)
	h.b = b
	if _, err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !h.logged("a new descriptor keeper holds the TUN queues and UDP sockets") {
		t.Fatalf("the agent did not hand the descriptors to a keeper of its own; logged:\n%s", h.logText())
	}
	kp, ok := b.Keeper()
	if !ok || !kp.Up {
		t.Fatalf("keeper %+v (%v), want one up", kp, ok)
	}
	var holders []int
	select {
	case holders = <-seen:
	default:
		t.Fatal("the old keeper was not told to quit")
	}
	if !slices.Contains(holders, kp.Pid) {
		t.Fatalf("as the old keeper let go of the descriptors, processes %v besides the agent held the UDP socket, not the new keeper (pid %d): "+
			"a SIGKILL of the agent then leaves no keeper", holders, kp.Pid)
	}
	// One keeper at the end, which holds every queue once the agent is gone.
	b.letGo()
	h.exit()
	// The first agent's keeper, told to quit by keptQuit, may not have
	// exited yet (under the race detector).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		pids := h.keeperPids()
		if len(pids) == 1 && pids[0] == kp.Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keepers %v 10 s after the agent is gone, want the new one alone (pid %d)", pids, kp.Pid)
		}
	}
	if n := attachedQueues(t, h); n != 2 {
		t.Errorf("%d queues of %s attached once the agent is gone, want the 2 the keeper holds", n, DeviceName)
	}
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 4), hostAddr); err != nil {
		t.Fatal(err)
	}
	h.queues = 2
	h.start()
	if n := h.countLogs("took the device and sockets over from the descriptor keeper"); n != 2 {
		t.Fatalf("the next agent did not take the device and sockets over from the keeper; logged:\n%s", h.logText())
	}
	h.reconcile(peers...)
	expectReply(t, peer, 4)
}

// TestReplacingKeeperOutlivesAgent: the agent is SIGKILLed at each point
// of the hand-over after it started the keeper that replaces the one it
// met (its end of the pipe to that keeper and its copies of the
// descriptors close then): before it told the old keeper to quit, after,
// once it bound the name, once it listened there. The new keeper finishes
// the hand-over on its own and holds every queue, those the agent added
// too, for the next agent; the old one is gone.
func TestReplacingKeeperOutlivesAgent(t *testing.T) {
	for _, tc := range []struct {
		name string
		did  int // steps of the agent's done before its death
	}{{"before the quit", 0}, {"after the quit", 1}, {"after the bind", 2}, {"after the listen", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := oneQueueExited(t)
			old := h.keeperPids()
			if len(old) != 1 {
				t.Fatalf("keepers %v before the hand-over, want one", old)
			}
			var cmd *exec.Cmd
			if err := h.host.Do(func() error {
				k, ok, err := fetchKept(context.Background(), DeviceName)
				if !ok {
					return fmt.Errorf("no keeper answers (err %v)", err)
				}
				defer k.close()
				added, err := openQueues(DeviceName, 1)
				if err != nil {
					return err
				}
				k.tun = append(slices.Clip(k.tun), added...)
				ln, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					return err
				}
				defer unix.Close(ln)
				r, w, err := os.Pipe()
				if err != nil {
					return err
				}
				defer w.Close()
				cmd, err = execKeeper("/proc/self/exe", DeviceName, ln, k, r)
				r.Close()
				if err != nil {
					return err
				}
				steps := []func() error{
					func() error { _, err := quitKeeper(context.Background(), DeviceName); return err },
					func() error {
						// The old keeper closed its listener before its bye.
						return unix.Bind(ln, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)})
					},
					func() error { return unix.Listen(ln, 8) },
				}
				for _, step := range steps[:tc.did] {
					if err := step(); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			defer func() {
				// A keeper that failed to take the name (the test failing)
				// is told nothing: it is killed, so that the failure is
				// reported rather than the test hanging in Wait.
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = h.host.Do(func() error { _, err := quitKeeper(ctx, DeviceName); return err })
				exited := make(chan struct{})
				go func() { _ = cmd.Wait(); close(exited) }()
				select {
				case <-exited:
				case <-ctx.Done():
					_ = cmd.Process.Kill()
					<-exited
				}
			}()
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				pids := h.keeperPids()
				if len(pids) == 1 && pids[0] == cmd.Process.Pid && h.keeperAnswers() == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("keepers %v 10 s after the agent died, want the new one alone (pid %d) answering (%v); the old one was %v",
						pids, cmd.Process.Pid, h.keeperAnswers(), old)
				}
			}
			if n := attachedQueues(t, h); n != 2 {
				t.Errorf("%d queues of %s attached once the agent is gone, want the 2 the new keeper holds", n, DeviceName)
			}
		})
	}
}

// TestReplacingKeeperOldOneUnanswering: the keeper the agent replaces
// answers its get, then nothing more (stopped, frozen) when told to quit.
// The agent gives up after keeperTimeout and ends the new keeper it
// started, says why it has no keeper of its own, and carries traffic over
// the descriptors it took over.
func TestReplacingKeeperOldOneUnanswering(t *testing.T) {
	h, peers := oneQueueExited(t)
	k := h.keptQuit()
	frozen := make(chan struct{})
	h.fakeKeeperQuitting(k.spec(), k.all(), func() { <-frozen })
	t.Cleanup(func() { close(frozen) })

	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	b.queues = 2
	h.track(b)
	h.b = b
	if _, err := b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.stopWorkers) // no Watch ends them
	if !h.logged("no descriptor keeper: an agent restart will drop packets while it lasts") || !h.logged("did not answer within") {
		t.Fatalf("the agent did not say that the new keeper could not take the old one's place, and why; logged:\n%s", h.logText())
	}
	if kp, ok := b.Keeper(); !ok || kp.Up || kp.Replaced {
		t.Errorf("keeper %+v (%v), want none up and none replaced", kp, ok)
	}
	if pids := h.keeperPids(); len(pids) != 0 {
		t.Errorf("keeper processes %v left, want none: the new keeper is ended when the name cannot be taken", pids)
	}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 5), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 5)
}
