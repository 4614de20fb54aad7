package subnet_test

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestMovingAwayFromOurOwnLeaseAtAnotherPublicIP: a host restarted with
// another public IP (its --iface corrected, a new address) finds its previous
// subnet held by its own host identity at the old public IP. It moves, as it
// must (a copy of its state directory on another host looks the same), and
// the line says whose the holder is and how to free it. Before, it said only
// "held by another host" with holderHostID our own identity, seen on the
// namespace cluster after a restart from eth1 (198.19.0.3) to eth0
// (198.18.0.3).
func TestMovingAwayFromOurOwnLeaseAtAnotherPublicIP(t *testing.T) {
	e := newEnv(t, net16)
	old := acquire(t, e.manager("198.19.0.3", hostID(3), pinned("10.244.7.0/24")))
	log, lines := captureLog()
	l := acquire(t, e.manager("198.18.0.3", hostID(3), pinned("10.244.7.1/24"), func(c *subnet.ManagerConfig) { c.Logger = log }))
	if l.Subnet == old.Subnet {
		t.Fatalf("took %s back at another public IP; a copy of the state dir would too", l.Subnet)
	}
	for _, line := range lines() {
		if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, `"holder"="198.19.0.3"`) &&
			strings.Contains(line, "the holder has our host identity at another public IP") &&
			strings.Contains(line, "agentctl lease release 10.244.7.0/24 --force") {
			return
		}
	}
	t.Errorf("no line saying that the holder of 10.244.7.0/24 is our own identity at 198.19.0.3, and how to free it; log:\n%s", strings.Join(lines(), "\n"))
}
