package udp

// One agent at a time runs the udp backend on a host's device: a second
// one, which agentd.lock did not stop (another --state-dir), is refused.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestSecondAgentRefused: a second agent starts on a host where one runs
// the udp backend already (another --state-dir, so agentd.lock did not
// stop it). It is refused before it asks the keeper anything, with an
// error that names the running agent; the running agent's datapath is
// untouched. Once that one has stopped, the next start takes over as a
// restart does. Before, the second agent took the keeper's copies of the
// running one's queues and sockets and both read them, each getting part
// of every flow.
func TestSecondAgentRefused(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	queues := attachedQueues(t, h)
	keeper := h.keeperPid()

	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	h.track(b)
	_, err = b.Prepare(context.Background())
	if err == nil {
		b.fds.close()
		t.Fatal("a second agent's Prepare succeeded beside the running one")
	}
	t.Logf("the second agent: %v", err)
	for _, want := range []string{"another agentd", fmt.Sprintf("pid %d", os.Getpid()), "--state-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not say %q", want)
		}
	}
	if n := attachedQueues(t, h); n != queues {
		t.Errorf("%d queues of %s attached after the refusal, want the running agent's %d", n, DeviceName, queues)
	}
	if pid := h.keeperPid(); pid != keeper {
		t.Errorf("keeper pid %d after the refusal, want the running agent's %d", pid, keeper)
	}
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 1)

	h.exit()
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatal("once the first agent had stopped, the next did not take over from the keeper")
	}
}

// TestClaimSquatted: a process of another user holds the agents' claim on
// the device (any local user can bind an abstract name). It is no agent of
// ours, so the agent starts all the same, and says so.
func TestClaimSquatted(t *testing.T) {
	h := newTestNet(t)
	h.squatOn("@agentd-udp-agent/flannel0", 1, false)
	h.start()
	if !h.logged("the agents' claim on the device is held by a process of another user") {
		t.Errorf("the squatted claim was not logged; logged:\n%s", h.logText())
	}
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 1)
}

// TestSquattedClaimRetaken: the agents' claim on the device is held by a
// process of another user when the agent starts, which goes on without it;
// the squatter exits later. The agent's next pass takes the claim, says
// so, and from then on a second agent is refused as in
// TestSecondAgentRefused. Before, the agent never took it while it ran: a
// second agent started after the squatter had gone got as far as the
// keeper and took copies of the running agent's queues and sockets. The
// claim has no part in restarts: while the squatter holds it, an agent
// restart still takes the device over from the keeper and loses nothing.
func TestSquattedClaimRetaken(t *testing.T) {
	h := newTestNet(t)
	free := h.squatOn("@agentd-udp-agent/flannel0", 1, false)
	h.start()
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	h.exit()
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatal("the restarted backend did not take over from the keeper")
	}
	h.reconcile(peers...)
	expectReply(t, peer, 1)
	if h.logged("took the agents' claim on the device") {
		t.Fatal("the agent says it took the claim while the squatter holds it")
	}

	free()
	h.reconcile(peers...)
	if !h.logged("took the agents' claim on the device") {
		t.Error("the pass after the squatter exited did not say it took the claim")
	}
	b, err := newBackend(h.cfg, h.host.Handle, h.host.NsHandle, h.host.Do)
	if err != nil {
		t.Fatal(err)
	}
	h.track(b)
	if _, err = b.Prepare(context.Background()); err == nil {
		b.fds.close()
		t.Fatal("a second agent's Prepare succeeded beside the running one once the squatter had gone")
	}
	var running *agentRunningError
	if !errors.As(err, &running) {
		t.Errorf("the second agent: %v, want it refused as another agent runs", err)
	}
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 2), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 2)
}
