package udp

// A keeper that could not be started is tried again, spaced by a backoff,
// until one runs; the first failure is logged loudly, the tries quietly.

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// TestKeeperRetrySchedule: the waits between tries double from
// keeperRetryMin up to keeperRetryMax (each drawn from the nominal wait's
// second half), a try is due exactly when its wait has passed, a spell is
// logged at V(0) at its first failure and then once every keeperRemind,
// and a keeper's start ends the spell and says how it went.
func TestKeeperRetrySchedule(t *testing.T) {
	var r keeperRetry
	t0 := time.Unix(1_000_000_000, 0)
	if !r.due(t0) {
		t.Fatal("with no spell, a try is not due at once")
	}
	if tries, _, _ := r.up(t0); tries != 0 {
		t.Fatalf("up with no spell: %d failed starts", tries)
	}
	now, nominal := t0, keeperRetryMin
	var loud []time.Time
	tries := 0
	for now.Sub(t0) < 3*time.Hour+30*time.Minute {
		tries++
		wait, l := r.failed(now, tries == 1)
		if wait < nominal/2 || wait > nominal {
			t.Fatalf("try %d: wait %v, want within [%v, %v]", tries, wait, nominal/2, nominal)
		}
		if r.due(now.Add(wait-time.Nanosecond)) || !r.due(now.Add(wait)) {
			t.Fatalf("try %d: the next is not due exactly %v later", tries, wait)
		}
		if l {
			loud = append(loud, now)
		}
		now = now.Add(wait)
		nominal = min(2*nominal, keeperRetryMax)
	}
	if len(loud) == 0 || !loud[0].Equal(t0) {
		t.Fatalf("the spell's first failure was not logged at V(0): %v", loud)
	}
	// A reminder comes with the first try an hour after the last one.
	if len(loud) != 4 {
		t.Errorf("%d failures logged at V(0) in 3.5 h, want 4 (the first, then hourly)", len(loud))
	}
	for i := 1; i < len(loud); i++ {
		if gap := loud[i].Sub(loud[i-1]); gap < keeperRemind || gap > keeperRemind+keeperRetryMax {
			t.Errorf("V(0) logs %v apart, want %v to %v", gap, keeperRemind, keeperRemind+keeperRetryMax)
		}
	}
	got, down, died := r.up(now)
	if got != tries || down != now.Sub(t0) || !died {
		t.Fatalf("up: %d failed starts, %v down, died %v; want %d, %v, true", got, down, died, tries, now.Sub(t0))
	}
	if !r.due(now) {
		t.Fatal("after a keeper started, a try is not due at once")
	}
	// A new spell starts again from the shortest wait, and loudly.
	if wait, l := r.failed(now, false); wait > keeperRetryMin || !l {
		t.Fatalf("a new spell's first failure: wait %v, loud %v; want at most %v, loud", wait, l, keeperRetryMin)
	}
	if _, _, died := r.up(now); died {
		t.Fatal("a spell that began with a failed start is taken for one that began with a death")
	}
}

// holdKeeperName binds the keeper's abstract name in the host namespace,
// as any local process can, without listening: no keeper can start while
// it is held. free lets go of it; so does the test's end.
func (h *testHost) holdKeeperName() (free func()) {
	h.t.Helper()
	fd := -1
	if err := h.host.Do(func() error {
		var err error
		if fd, err = unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrUnix{Name: keeperAddr(DeviceName)})
	}); err != nil {
		if fd >= 0 {
			unix.Close(fd)
		}
		h.t.Fatalf("hold the keeper's name: %v", err)
	}
	var once sync.Once
	free = func() { once.Do(func() { unix.Close(fd) }) }
	h.t.Cleanup(free)
	return free
}

// loggedTimes counts the log lines whose message begins with msg.
func (h *testHost) loggedTimes(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.logs {
		if strings.Contains(l, `"msg"="`+msg) {
			n++
		}
	}
	return n
}

// noKeeper checks that no keeper runs and the backend says so.
func (h *testHost) noKeeper(when string) {
	h.t.Helper()
	var pids []int
	_ = h.host.Do(func() error { pids = keeperPids(DeviceName); return nil })
	if len(pids) != 0 || h.b.keeper != nil {
		h.t.Fatalf("%s: keepers %v running, want none", when, pids)
	}
	if up := h.metric("agentd_udp_keeper_up"); up != 0 {
		h.t.Errorf("%s: agentd_udp_keeper_up %v, want 0", when, up)
	}
}

// keeperBack checks that a keeper this backend started after a spell
// without one holds its descriptors, and that it was said; restarts is
// what agentd_udp_keeper_restarts_total must be.
func (h *testHost) keeperBack(restarts float64) {
	h.t.Helper()
	if err := h.keeperAnswers(); err != nil {
		h.t.Fatal(err)
	}
	if h.b.keeper == nil || h.keeperPid() != h.b.keeper.Process.Pid {
		h.t.Fatal("the keeper that answers is not the one the backend started")
	}
	if !h.logged("started a descriptor keeper after a spell without one") {
		h.t.Error("the keeper's start after the spell was not logged")
	}
	if up := h.metric("agentd_udp_keeper_up"); up != 1 {
		h.t.Errorf("agentd_udp_keeper_up %v, want 1", up)
	}
	if n := h.keeperRestarts(); n != restarts {
		h.t.Errorf("agentd_udp_keeper_restarts_total %v, want %v", n, restarts)
	}
}

// TestKeeperStartRetried: the keeper cannot be started when the agent
// starts, as its name is held by another process: a squatter of another
// user that listens and never accepts (Prepare then does not try), or a
// socket bound to it (the start fails). The agent runs without one and
// says so once; later passes try again, quietly; once the name is free, a
// keeper starts, it is said, and an agent restart loses nothing again.
// Before, the backend never tried again: no keeper for the agent's life.
func TestKeeperStartRetried(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	for i, tc := range []struct {
		name string
		hold func(h *testHost) (free func())
		msg  string // the first failure's
	}{
		{"squatter", func(h *testHost) func() { return h.squat(1, false) },
			"no descriptor keeper: its socket is held by another process"},
		{"bound", (*testHost).holdKeeperName,
			"no descriptor keeper: an agent restart will drop packets while it lasts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var free func()
			h := newTestHost(t, func(h *testHost) { free = tc.hold(h) })
			h.reconcile(peers...)
			h.noKeeper("with the keeper's name held")
			if n := h.loggedTimes(tc.msg); n != 1 {
				t.Fatalf("%q logged %d times, want once", tc.msg, n)
			}

			// As the resync ticker and events would, Reconcile
			// until a try again has failed, quietly.
			start := time.Now()
			for h.reconcile(peers...); !h.logged("still no descriptor keeper"); h.reconcile(peers...) {
				if time.Since(start) > 15*time.Second {
					t.Fatalf("no try again to start a keeper within %v of the failed start, with the name held", time.Since(start).Round(time.Second))
				}
				time.Sleep(10 * time.Millisecond)
			}
			if n := h.loggedTimes("no descriptor keeper"); n != 1 {
				t.Errorf("a failed try again was logged at V(0) (%d lines say there is no keeper)", n)
			}
			h.noKeeper("after a try again, with the name held")

			free()
			freed := time.Now()
			for h.reconcile(peers...); h.b.keeper == nil; h.reconcile(peers...) {
				if time.Since(freed) > 2*keeperRetryMax {
					t.Fatalf("no keeper %v after the keeper's name was freed", time.Since(freed).Round(time.Second))
				}
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("a keeper %v after the name was freed", time.Since(freed).Round(time.Millisecond))
			h.keeperBack(0) // no keeper died
			if res := h.reconcile(peers...); res.Changed() {
				t.Errorf("a Reconcile after the keeper started changed %v", res)
			}
			h.restartLosesNothing(peers, uint16(10+i))
		})
	}
}

// TestKeeperRestartRetried: the keeper dies while the agent runs, and the
// new one cannot start, as a process has taken its name meanwhile. The
// backend says so, counts no restart, and is woken again after about a
// second (not only at the next resync, 30 s by default); by then the name
// is free, and that pass starts the keeper, counted as the dead one's
// replacement. Before, no try came and no keeper ran again.
func TestKeeperRestartRetried(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	old := h.killKeeper("its keeper")
	// The name went with the keeper's last descriptor, before its pidfd
	// said it had exited.
	free := h.holdKeeperName()
	woke := h.woken()
	h.reconcile(peers...)
	if !h.logged("the descriptor keeper died while the agent runs") {
		t.Fatal("the keeper's death was not logged")
	}
	h.noKeeper("with the dead keeper's name taken")
	if n := h.loggedTimes("no descriptor keeper: an agent restart will drop packets"); n != 1 {
		t.Fatalf("the failed restart logged %d times, want once", n)
	}
	if n := h.keeperRestarts(); n != 0 {
		t.Errorf("agentd_udp_keeper_restarts_total %v after a failed restart, want 0", n)
	}
	free()
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatalf("the backend was not woken to try again within 10s of the failed restart (the keeper, pid %d, died)", old)
	}
	h.reconcile(peers...)
	h.keeperBack(1) // the dead one's replacement
	h.restartLosesNothing(peers, 20)
}
