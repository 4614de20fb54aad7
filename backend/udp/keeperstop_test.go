package udp

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestStopWithoutKeeper: the agent is stopped (SIGTERM: its context ends)
// while no keeper holds the descriptors and before a pass has started one:
// the keeper died and the pass its death woke found the context ended
// ("died"), or a spell without one (its name was held) had not ended by a
// try again ("spell"). Its copies are then the only ones, and they close as
// it exits; so Watch's end starts a keeper, which holds every queue and
// socket once the agent is gone, and the next agent takes them over, with
// what was queued meanwhile. Before, the agent exited leaving nothing to
// hold them: no keeper answered, and the next agent made the device's
// queues and the sockets anew, dropping what waited in them.
func TestStopWithoutKeeper(t *testing.T) {
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	for i, tc := range []struct {
		name     string
		hold     bool    // the keeper's name is held at the start
		restarts float64 // agentd_udp_keeper_restarts_total once stopped
	}{
		{"died", false, 1},
		{"spell", true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var free func()
			h := newTestHost(t, func(h *testHost) {
				if tc.hold {
					free = h.holdKeeperName()
				}
			})
			h.reconcile(peers...)
			if tc.hold {
				h.noKeeper("with the keeper's name held")
				free()
			} else {
				h.killKeeper("its keeper")
			}
			// The pass woken by the death, or due for a try, comes
			// after the stop.
			ctx, stop := context.WithCancel(context.Background())
			stop()
			if _, err := h.b.Reconcile(ctx, h.own, peers); !errors.Is(err, context.Canceled) {
				t.Fatalf("Reconcile after the stop: %v, want %v", err, context.Canceled)
			}
			peer := h.udpFrom("198.18.0.2")
			start := time.Now()
			h.exit()
			t.Logf("the stop took %v", time.Since(start).Round(100*time.Microsecond))
			if err := h.keeperAnswers(); err != nil {
				t.Fatalf("after the agent stopped without a keeper: %v; logged:\n%s", err, h.logText())
			}
			if !h.logged("started a descriptor keeper as the agent stops") {
				t.Error("the keeper's start at the stop was not logged")
			}
			if n := h.keeperRestarts(); n != tc.restarts {
				t.Errorf("agentd_udp_keeper_restarts_total %v, want %v", n, tc.restarts)
			}
			id := uint16(30 + i)
			if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", id), hostAddr); err != nil {
				t.Fatal(err)
			}
			h.start()
			if !h.logged("took the device and sockets over from the descriptor keeper") {
				t.Fatalf("the next agent did not take the device and sockets over from a keeper; logged:\n%s", h.logText())
			}
			h.reconcile(peers...)
			expectReply(t, peer, id)
		})
	}
}
