package udp

import (
	"context"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestStopWhileKeeperHandedOver: the agent is stopped (SIGTERM: its
// context ends) while it hands the descriptors it took over to a keeper of
// its own, just as the old keeper has let go of its copies: here, the old
// keeper held fewer queues than the agent wants (more CPUs; an upgrade
// replaces a keeper of another binary the same way). The agent's copies
// close as it exits; the hand-over is finished all the same, so the new
// keeper (started before the old one was told to quit, since 932bd8a)
// holds every queue and socket once the agent is gone, and the next agent
// takes them over. Before 2026-12-07 the hand-over gave up
// at the stop, and nothing held the device's queues or the sockets after
// the agent's exit: no keeper answered. On the test cluster, 2 of 80
// SIGTERMs 0 to 95 ms into the start of an upgraded agent left no keeper,
// and a ping every 10 ms across them lost 9 and 17 in a row, until the next
// agent had made everything anew.
func TestStopWhileKeeperHandedOver(t *testing.T) {
	h, peers := oneQueueExited(t)
	// The keeper's descriptors, served by a keeper that ends the next
	// agent's context as it lets go of them.
	k := h.keptQuit()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	h.fakeKeeperQuitting(k.spec(), k.all(), stop)

	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	b.queues = 2
	h.track(b)
	h.b = b
	_, err = b.Prepare(ctx)
	t.Logf("Prepare across the stop: %v", err)
	if !h.logged("added TUN queues and UDP sockets to those taken over") {
		t.Fatalf("the agent did not take the keeper's descriptors over and add to them; logged:\n%s", h.logText())
	}
	// The agent's process ends: its claim and its copies go.
	b.letGo()
	h.exit()
	if err := h.keeperAnswers(); err != nil {
		t.Fatalf("after the agent stopped during the hand-over: %v; logged:\n%s", err, h.logText())
	}
	if n := attachedQueues(t, h); n != 2 {
		t.Errorf("%d queues of %s attached once the agent is gone, want the 2 the keeper holds", n, DeviceName)
	}
	// What arrives now waits for the next agent, which takes it all over.
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 3), hostAddr); err != nil {
		t.Fatal(err)
	}
	h.queues = 2
	h.start()
	if n := h.countLogs("took the device and sockets over from the descriptor keeper"); n != 2 {
		t.Fatalf("the next agent did not take the device and sockets over from the keeper; logged:\n%s", h.logText())
	}
	h.reconcile(peers...)
	expectReply(t, peer, 3)
}

// oneQueueExited is a test host whose agent ran one queue, programmed the
// peer it returns and exited, its keeper holding the descriptors: the
// start of the hand-over tests, whose next agent wants two queues.
func oneQueueExited(t *testing.T) (*testHost, []subnet.Lease) {
	h := newTestNet(t)
	h.queues = 1
	h.start()
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	h.exit()
	return h, peers
}
