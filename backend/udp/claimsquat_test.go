package udp

import (
	"strings"
	"testing"
)

// TestClaimSquatterNamed: when a process of another user holds the agents'
// claim on the device, the agent's line saying it goes on without the
// claim names that process (pid and uid), so that an operator can find it.
func TestClaimSquatterNamed(t *testing.T) {
	h := newTestNet(t)
	h.squatOn(claimAddr(DeviceName), 1, false)
	h.start()
	for _, l := range strings.Split(h.logText(), "\n") {
		if strings.Contains(l, "the agents' claim on the device is held by a process of another user") {
			if !strings.Contains(l, `"holders"="pid `) || !strings.Contains(l, ", uid ") {
				t.Fatalf("the line does not name the squatter by pid and uid:\n%s", l)
			}
			return
		}
	}
	t.Fatalf("the squatted claim was not logged; logged:\n%s", h.logText())
}
