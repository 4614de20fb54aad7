package udp

import (
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestDeviceDeletedLogsNoError: when flannel0 is deleted under the running
// workers, their reads and writes fail (EBADFD: the queue is detached) and
// the next pass makes the device again; that is a repair, said at info
// level, not an error. The fault soak (make soak SOAK_FAULTS=1
// SOAK_BACKEND=udp) found an error line "datapath worker stopped" with
// "read: file descriptor in bad state" for each worker at every deletion.
func TestDeviceDeletedLogsNoError(t *testing.T) {
	h := newTestHost(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	l, err := h.host.Handle.LinkByName(DeviceName)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	// The workers notice at their next read or write: poll for them.
	var lines []string
	for deadline := time.Now().Add(5 * time.Second); len(lines) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no worker said it stopped within 5 s of the device's deletion")
		}
		h.mu.Lock()
		for _, l := range h.logs {
			if strings.Contains(l, "datapath worker stopped") {
				lines = append(lines, l)
			}
		}
		h.mu.Unlock()
	}
	for _, l := range lines {
		if strings.Contains(l, `"error"=`) {
			t.Errorf("a worker stopped by the device's deletion logged an error: %s", l)
		}
	}
	h.reconcile(peers...)
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 7), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 7)
}
