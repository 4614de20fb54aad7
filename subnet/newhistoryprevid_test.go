package subnet_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestSnapshotOfOurPreviousIdentityKept: the host lost its --state-dir (a
// new host identity) and restarted, taking its own lease back through the
// identity its subnet.env names (README: Restart / upgrade); then etcd is
// restored from a snapshot taken before that restart. The snapshot holds our
// key as the earlier run wrote it, naming our previous identity, on that
// run's etcd lease, which etcd restores alive. That value is this host's own,
// as Acquire judged it at the start: the agent writes its value back and
// keeps its subnet. Before, it took the value for another host's, stopped
// with "own subnet lease lost: key … now belongs to 198.18.0.1 (host …1)",
// removed subnet.env, and its restart, which no longer knows the previous
// identity, moved it to another subnet.
func TestSnapshotOfOurPreviousIdentityKept(t *testing.T) {
	t.Parallel()
	r := startRestartable(t, 0)
	e := r.env(net16)
	before := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	old := acquire(t, before)
	snap := r.snapshot(e.cli)

	a := e.manager("198.18.0.1", hostID(9), func(c *subnet.ManagerConfig) {
		c.PreviousSubnet, c.PreviousHostID = netip.MustParsePrefix("10.244.1.0/24"), hostID(1)
	})
	own := acquire(t, a)
	if own.Subnet != old.Subnet {
		t.Fatalf("acquired %s after the state dir was lost, want %s back", own.Subnet, old.Subnet)
	}
	returned := runWatched(t, a)
	<-a.PeersSynced()

	r.restore(snap, 0)
	eventuallyWithin(t, 30*time.Second, "our value written back over the snapshot's", func() error {
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
		val, id, ok := e.raw(t, own)
		if !ok || !strings.Contains(val, hostID(9)) {
			return fmt.Errorf("own key %s (present %v)", val, ok)
		}
		if l, _ := a.Own(); l.Subnet != own.Subnet || l.LeaseID != id {
			return fmt.Errorf("Own = %s on etcd lease %x, the key is on %x", l.Subnet, l.LeaseID, id)
		}
		// The earlier run's etcd lease, alive in the snapshot, is
		// revoked: it holds nothing now.
		if n := e.leaseCount(t); n != 1 {
			return fmt.Errorf("%d etcd leases", n)
		}
		return nil
	})
}
