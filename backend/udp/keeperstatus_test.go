package udp

import (
	"testing"

	"github.com/agentd/agentd/subnet"
)

// keeperStatus is the backend's Keeper, failing the test when it says
// none.
func (h *testHost) keeperStatus(when string) KeeperStatus {
	h.t.Helper()
	k, ok := h.b.Keeper()
	if !ok {
		h.t.Fatalf("%s: Keeper says none", when)
	}
	return k
}

// TestKeeperStatus: Keeper, which the agent's /status shows (udpKeeper),
// says whether a descriptor keeper is up and its pid, how many keepers
// were started anew after one died (as agentd_udp_keeper_restarts_total),
// and whether the agent replaced, at its start, the keeper it met; nothing
// before Prepare nor after Watch's end. Before, only the metrics
// agentd_udp_keeper_up and agentd_udp_keeper_restarts_total said any of it.
func TestKeeperStatus(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	t.Run("killed", func(t *testing.T) {
		h := newTestNet(t)
		unprepared, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
		if err != nil {
			t.Fatal(err)
		}
		if k, ok := unprepared.Keeper(); ok {
			t.Errorf("before Prepare: %+v, want none", k)
		}
		h.start()
		h.reconcile(peers...)
		if k, want := h.keeperStatus("started"), (KeeperStatus{Up: true, Pid: h.keeperPid()}); k != want {
			t.Errorf("started: %+v, want %+v", k, want)
		}
		old := h.killKeeper("its keeper")
		if k := h.keeperStatus("killed"); k.Up || k.Pid != 0 {
			t.Errorf("once its keeper (pid %d) was killed, before a pass: %+v, want down and no pid", old, k)
		}
		h.reconcile(peers...)
		if k, want := h.keeperStatus("replaced"), (KeeperStatus{Up: true, Pid: h.keeperPid(), Restarts: 1}); k != want || k.Pid == old {
			t.Errorf("after a pass: %+v, want %+v (not the killed pid %d)", k, want, old)
		}
		h.stop()
		if k, ok := h.b.Keeper(); ok {
			t.Errorf("after Watch's end: %+v, want none", k)
		}
	})
	for _, tc := range []struct {
		name  string
		stuck bool // the old keeper keeps its name at the quit
		want  KeeperStatus
	}{
		{"replaced", false, KeeperStatus{Up: true, Replaced: true}},
		{"replacement failed", true, KeeperStatus{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			h.queues = 1
			h.start()
			h.reconcile(peers...)
			h.exit()
			if tc.stuck {
				h.keeperKeepingName(h.keptQuit())
			}
			h.queues = 2 // more CPUs: a new keeper holds the whole set
			h.start()
			want := tc.want
			if want.Up {
				if h.b.keeper == nil {
					t.Fatalf("no new keeper; logged:\n%s", h.logText())
				}
				// The old keeper, gone, may not be reaped yet:
				// keeperPid would see both.
				want.Pid = h.b.keeper.Process.Pid
			}
			if k := h.keeperStatus("restarted with more queues"); k != want {
				t.Errorf("restarted with more queues: %+v, want %+v", k, want)
			}
		})
	}
}
