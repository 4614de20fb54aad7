package subnet_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestMovingToOurOwnLeaseElsewhereIsLoud: a host started without a lease of
// the subnet its previous subnet.env names takes a key for another subnet as
// its own: a reservation for its public IP (README, Reserve a subnet: "at a
// start without a live lease, the reservation wins over the subnet in
// subnet.env"), or a live lease naming its identity. Either is a move:
// dockerd's --bip, the CNI bridge and its pods still use the old subnet, and
// another host may lease it next. It said only "reusing our lease", seen on
// the namespace cluster (subnet.env 10.244.50.0/24, reservation
// 10.244.250.0/24), where every other move says MOVING TO ANOTHER SUBNET.
func TestMovingToOurOwnLeaseElsewhereIsLoud(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// setUp writes the key the restarted host is to take.
		setUp       func(t *testing.T, e *env)
		reservation bool
	}{
		{"reservation", func(t *testing.T, e *env) {
			e.putKeys(t, map[string]string{"10.244.7.0-24": `{"PublicIP":"198.18.0.1"}`})
		}, true},
		{"own live lease", func(t *testing.T, e *env) {
			acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.7.0/24")))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, net16)
			tc.setUp(t, e)
			log, lines := captureLog()
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24"), func(c *subnet.ManagerConfig) {
				c.PreviousHostID = hostID(1)
				c.Logger = log
			}))
			if l.Subnet != netip.MustParsePrefix("10.244.7.0/24") || l.Reservation() != tc.reservation {
				t.Fatalf("took %s (reservation %v), want 10.244.7.0/24 (reservation %v)", l.Key(), l.Reservation(), tc.reservation)
			}
			for _, line := range lines() {
				if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, `"previous"="10.244.5.0/24"`) &&
					strings.Contains(line, `"new"="10.244.7.0/24"`) {
					t.Logf("%s", line)
					return
				}
			}
			t.Errorf("moved from subnet.env's 10.244.5.0/24 to 10.244.7.0/24 without MOVING TO ANOTHER SUBNET; log:\n%s", strings.Join(lines(), "\n"))
		})
	}
}
