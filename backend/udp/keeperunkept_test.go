package udp

import (
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"golang.org/x/sys/unix"
)

// unkeptMsg is sayUnkept's line.
const unkeptMsg = "no descriptor keeper held flannel0's queues and the UDP sockets"

// TestStartWithoutKeeperSaid: an agent that starts where flannel0 is but
// no descriptor keeper holds its queues and the sockets (the last agent
// ended with its keeper: the service's whole cgroup killed; until
// 2026-12-07 also an agent SIGKILLed while it handed them to a new keeper)
// says so once, and carries traffic with new ones. The first start (no
// device) and a restart that takes them over from a keeper say nothing of
// it. Before, such a start made new queues and sockets without a word,
// though whatever was sent to the host since the last agent let go of them
// was dropped: on the test cluster, 6 of 8 agents SIGKILLed as the old
// keeper exited left none, and a ping every 10 ms lost 62 of 621.
func TestStartWithoutKeeperSaid(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	if n := h.loggedTimes(unkeptMsg); n != 0 {
		t.Fatalf("the first start logged %q %d times, want none", unkeptMsg, n)
	}
	peer := h.udpFrom("198.18.0.2")
	h.exit()
	h.start()
	if !h.logged("took the device and sockets over from the descriptor keeper") {
		t.Fatal("the restarted backend did not take over from a keeper")
	}
	if n := h.loggedTimes(unkeptMsg); n != 0 {
		t.Fatalf("a restart that took over from a keeper logged %q %d times, want none", unkeptMsg, n)
	}

	// The agent ends with its keeper.
	h.exit()
	old := h.signalKeeper(unix.SIGKILL)
	for deadline := time.Now().Add(5 * time.Second); h.b.keeperListening(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the keeper (pid %d) still listens 5 s after SIGKILL", old)
		}
	}
	h.start()
	if n := h.loggedTimes(unkeptMsg); n != 1 {
		t.Fatalf("a start with flannel0 but no keeper logged %q %d times, want once; logged:\n%s", unkeptMsg, n, h.logText())
	}
	h.reconcile(peers...)
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 2), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 2)
	if k, ok := h.b.Keeper(); !ok || !k.Up {
		t.Errorf("after that start: keeper %+v (%v), want one up", k, ok)
	}
}
