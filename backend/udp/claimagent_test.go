package udp

import (
	"fmt"
	"os"
	"testing"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/agentd/agentd/subnet"
)

// TestClaimTakenByAnotherAgent: the agents' claim on the device is held by
// a process of another user when the agent starts, which goes on without
// it; once the squatter has exited, a process of our user takes the name
// first (this test process, as another agentd that had started beside the
// squatter too would). The agent's passes find that, and it logs once, at
// error level, that another agentd (its pid) took the claim and two agents
// run here, however many passes follow; it says nothing of taking the
// claim. Before, each pass failed its bind in silence. Once that holder
// lets the name go, the next pass takes it and says so.
func TestClaimTakenByAnotherAgent(t *testing.T) {
	const tookClaim = "took the agents' claim on the device"
	h := newTestNet(t)
	free := h.squatOn(claimAddr(DeviceName), 1, false)
	h.start()
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)

	free()
	var other *os.File
	err := h.host.Do(func() (err error) {
		other, err = sockclaim.Bind(claimAddr(DeviceName), "another-agent")
		return err
	})
	if err != nil {
		t.Fatalf("another agent's claim once the squatter exited: %v", err)
	}
	defer other.Close()
	for range 3 {
		h.reconcile(peers...)
	}
	warning := fmt.Sprintf("another agentd (pid %d) took the claim on the device: two agents run the udp backend here; stop one of them", os.Getpid())
	if n := h.loggedTimes(warning); n != 1 {
		t.Errorf("after 3 passes beside another agent holding the claim, %q logged %d times, want once; logged:\n%s", warning, n, h.logText())
	}
	if h.loggedTimes(tookClaim) != 0 {
		t.Fatal("the agent says it took the claim while another agent holds it")
	}

	other.Close()
	h.reconcile(peers...)
	if h.loggedTimes(tookClaim) != 1 {
		t.Errorf("the pass after the other agent let the claim go did not say it took it; logged:\n%s", h.logText())
	}
	var holders []int
	_ = h.host.Do(func() error { holders = sockclaim.Holders(claimAddr(DeviceName)); return nil })
	if len(holders) != 1 || holders[0] != os.Getpid() {
		t.Errorf("%s held by %v, want this agent (pid %d)", claimAddr(DeviceName), holders, os.Getpid())
	}
}
