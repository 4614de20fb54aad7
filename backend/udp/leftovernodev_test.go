package udp

import (
	"context"
	"testing"
	"time"
)

// TestRemoveLeftoverWithoutDevice: the agent starting another backend
// (RemoveLeftover) has nothing to do once flannel0 is gone, even while a
// keeper of a deleted flannel0 runs on (stopped, as when a --release-lease
// waited for it in vain): it neither waits for that keeper nor speaks of
// it, and the start goes on at once. Only Decommission, run again, waits
// for such a keeper and reports it (TestDecommissionStoppedKeeper).
func TestRemoveLeftoverWithoutDevice(t *testing.T) {
	h := newTestNet(t)
	h.udpAgentGone(t)
	keepers := stopKeepers(t, h)
	const wait = 500 * time.Millisecond
	if err := removeLeftover(context.Background(), h.host.Handle, h.host.Do, h.cfg, wait, ""); err == nil {
		t.Fatalf("Decommission with the keeper (pids %v) stopped succeeded\n%s", keepers, h.logText())
	}
	if _, err := h.host.Handle.LinkByName(DeviceName); err == nil {
		t.Fatalf("flannel0 not deleted:\n%s", h.logText())
	}
	before := h.countLogs("descriptor keeper")
	start := time.Now()
	if err := removeLeftover(context.Background(), h.host.Handle, h.host.Do, h.cfg, wait, "vxlan"); err != nil {
		t.Fatalf("RemoveLeftover without flannel0: %v", err)
	}
	if took := time.Since(start); took >= wait {
		t.Errorf("RemoveLeftover without flannel0 took %v: it waited for the keeper", took)
	}
	if n := h.countLogs("descriptor keeper"); n != before {
		t.Errorf("RemoveLeftover without flannel0 spoke of the keeper:\n%s", h.logText())
	}
}

// TestLeftoverCheckLetsGoOfClaim: to see that no agent runs udp on
// flannel0, RemoveLeftover takes the agents' claim on it, and lets it go
// at once: the agent goes on running another backend, and a udp agent
// started beside it later (a node switched back) must find the claim
// free, not held by an agent that runs no udp backend.
func TestLeftoverCheckLetsGoOfClaim(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	h := newTestNet(t)
	h.udpAgentGone(t)
	removeLeftover(context.Background(), h.host.Handle, h.host.Do, h.cfg, 10*time.Second, "vxlan")
	if _, err := h.host.Handle.LinkByName(DeviceName); err == nil {
		t.Fatalf("flannel0 not deleted:\n%s", h.logText())
	}
	if err := h.host.Do(func() error {
		f, _, err := claimDevice(DeviceName)
		if f != nil {
			f.Close()
		}
		return err
	}); err != nil {
		t.Fatalf("the claim after RemoveLeftover: %v", err)
	}
}
