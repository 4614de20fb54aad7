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
	t.Parallel()
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

// TestMovingNoteNamesDualStackKey: in a dual-stack network the note of that
// line named the held key's IPv4 subnet alone (agentctl lease release
// 10.244.7.0/24 --force), which lease release refuses when the host also
// has a plain key of that subnet (left from before EnableIPv6 was turned
// on). It names the dual-stack key as lease release takes it, quoted for
// the shell.
func TestMovingNoteNamesDualStackKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48","Backend":{"Type":"vxlan"}}`)
	old := acquire(t, e.manager("198.19.0.3", hostID(3), pinned("10.244.7.0/24")))
	if !old.IPv6Subnet.IsValid() {
		t.Fatalf("lease %s has no IPv6 subnet in a dual-stack network", old.Key())
	}
	log, lines := captureLog()
	acquire(t, e.manager("198.18.0.3", hostID(3), pinned("10.244.7.1/24"), func(c *subnet.ManagerConfig) { c.Logger = log }))
	want := "agentctl lease release '10.244.7.0/24&" + old.IPv6Subnet.String() + "' --force"
	for _, line := range lines() {
		if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, "the holder has our host identity at another public IP") {
			if !strings.Contains(line, want) {
				t.Errorf("the note does not say %q:\n%s", want, line)
			}
			return
		}
	}
	t.Errorf("no MOVING TO ANOTHER SUBNET line naming our own identity as the holder; log:\n%s", strings.Join(lines(), "\n"))
}
