package udp

// A keeper that dies while the agent runs is replaced, so that the next
// agent restart still loses nothing; one that is only stopped is left
// alone.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// keeperPid returns the pid of the one keeper in the host namespace.
func (h *testHost) keeperPid() int {
	h.t.Helper()
	var pids []int
	_ = h.host.Do(func() error { pids = keeperPids(DeviceName); return nil })
	if len(pids) != 1 {
		h.t.Fatalf("keepers %v, want one", pids)
	}
	return pids[0]
}

// signalKeeper sends sig to the one keeper in the host namespace and
// returns its pid.
func (h *testHost) signalKeeper(sig unix.Signal) int {
	h.t.Helper()
	pid := h.keeperPid()
	if err := unix.Kill(pid, sig); err != nil {
		h.t.Fatalf("kill -%d %d: %v", sig, pid, err)
	}
	return pid
}

// woken makes the backend's wake-ups (which Watch would hand to the agent)
// signal the returned channel.
func (h *testHost) woken() <-chan struct{} {
	ch := make(chan struct{}, 1)
	f := func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	h.b.wake.Store(&f)
	return ch
}

// keeperAnswers reports whether a keeper in the host namespace hands out
// descriptors that fit the backend.
func (h *testHost) keeperAnswers() error {
	return h.host.Do(func() error {
		k, ok, err := fetchKept(context.Background(), DeviceName)
		if !ok {
			return fmt.Errorf("no keeper answers (err %v)", err)
		}
		defer k.close()
		if why := h.b.unfit(k); why != "" {
			return fmt.Errorf("the keeper's descriptors do not fit: %s", why)
		}
		return nil
	})
}

// exit ends the backend as a dying agent process does: Watch's end stops
// the workers, and its own copies of the descriptors close, so that only
// the keeper holds the device's queues and the sockets.
func (h *testHost) exit() {
	h.stop()
	h.b.fds.close()
	h.b.fds = nil
}

// restartLosesNothing: an echo request sent while no agent runs is answered
// once the next one has started, from what the keeper held.
func (h *testHost) restartLosesNothing(peers []subnet.Lease, id uint16) {
	h.t.Helper()
	peer := h.udpFrom("198.18.0.2")
	h.exit()
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", id), hostAddr); err != nil {
		h.t.Fatal(err)
	}
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		h.t.Fatal("the restarted backend did not take over from a keeper")
	}
	h.reconcile(peers...)
	expectReply(h.t, peer, id)
}

// TestKilledKeeperIsReplaced: the keeper this agent started is SIGKILLed;
// the backend is woken, the next Reconcile starts a new keeper over the
// same descriptors and says so, and an agent restart after that still
// loses no packet. Before, nothing noticed: no keeper answered after any
// number of Reconciles, and the restart dropped the request.
func TestKilledKeeperIsReplaced(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	old := h.killKeeper("its keeper")
	h.reconcile(peers...)
	h.checkReplaced(old)
	for _, want := range []string{"signal: killed", "started a new descriptor keeper"} {
		if !h.logged(want) {
			t.Errorf("no log line says %q", want)
		}
	}
	if n := h.keeperRestarts(); n != 1 {
		t.Errorf("agentd_udp_keeper_restarts_total %v, want 1", n)
	}
	if res := h.reconcile(peers...); res.Changed() {
		t.Errorf("a Reconcile after the repair changed %v", res)
	}
	h.restartLosesNothing(peers, 1)
}

// TestKilledInheritedKeeperIsReplaced: as TestKilledKeeperIsReplaced, for
// a keeper an earlier agent started (this agent took the descriptors over
// from it): watched by its pid, it wakes the backend when it dies.
func TestKilledInheritedKeeperIsReplaced(t *testing.T) {
	h, peers := newInheritingHost(t)
	old := h.killKeeper("the inherited keeper")
	h.reconcile(peers...)
	h.checkReplaced(old)
	h.restartLosesNothing(peers, 2)
}

// checkReplaced checks that a keeper other than the one with pid old
// answers, and that the death was logged.
// newInheritingHost is a test host whose backend took its descriptors over
// from an earlier one's keeper (an agent restart), and the one peer it
// reconciled with.
func newInheritingHost(t *testing.T) (*testHost, []subnet.Lease) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	h.exit()
	h.start()
	h.reconcile(peers...)
	return h, peers
}

// killKeeper SIGKILLs the keeper (named which, for the error) and waits up
// to 10 s for the backend to be woken; it returns the killed pid.
func (h *testHost) killKeeper(which string) int {
	h.t.Helper()
	woke := h.woken()
	old := h.signalKeeper(unix.SIGKILL)
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		h.t.Errorf("the backend was not woken within 10s of %s (pid %d) being killed", which, old)
	}
	return old
}

func (h *testHost) checkReplaced(old int) {
	h.t.Helper()
	if err := h.keeperAnswers(); err != nil {
		h.t.Fatalf("after the keeper (pid %d) was killed and Reconcile ran: %v", old, err)
	}
	if pid := h.keeperPid(); pid == old {
		h.t.Fatalf("keeper pid %d, the killed one's", pid)
	}
	if !h.logged("the descriptor keeper died while the agent runs") {
		h.t.Error("the keeper's death was not logged")
	}
}

// keeperRestarts is agentd_udp_keeper_restarts_total (-1 if absent).
func (h *testHost) keeperRestarts() float64 {
	h.t.Helper()
	return h.metric("agentd_udp_keeper_restarts_total")
}

// metric is the value of the backend's counter or gauge name, a series
// without labels (-1 if absent).
func (h *testHost) metric(name string) float64 {
	h.t.Helper()
	reg := prometheus.NewRegistry()
	if err := reg.Register(h.b); err != nil {
		h.t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			if c := m.GetCounter(); c != nil {
				return c.GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	return -1
}

// TestStoppedKeeperIsLeftAlone: a keeper that is stopped (SIGSTOP) still
// holds the descriptors and is no death: Reconcile starts no other beside
// it, and it serves again once continued.
func TestStoppedKeeperIsLeftAlone(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	pid := h.signalKeeper(unix.SIGSTOP)
	defer unix.Kill(pid, unix.SIGCONT)
	for range 3 {
		h.reconcile(peers...)
	}
	if h.keeperRestarts() > 0 || h.logged("the descriptor keeper died") {
		t.Fatal("a stopped keeper was taken for dead")
	}
	if err := unix.Kill(pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := h.keeperAnswers(); err != nil {
		t.Fatalf("the continued keeper: %v", err)
	}
	if got := h.keeperPid(); got != pid {
		t.Fatalf("keeper pid %d, want %d", got, pid)
	}
}
