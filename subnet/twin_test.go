package subnet_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestOwnLeaseTakenOverByTwinStopsWithError: two agents with one host
// identity and one public IP (a state dir cloned with a VM image, behind one
// NAT address; a backup restored onto new hardware while the old host runs).
// The one started second takes the first one's live lease over, as a
// restarted host takes its own. The first must then give the subnet up with
// ErrHostIDShared, not take it back: before, each took the key back from the
// other and revoked the other's etcd lease, about 80 writes a second that
// woke every peer, with the key deleted and recreated at each of them.
func TestOwnLeaseTakenOverByTwinStopsWithError(t *testing.T) {
	e := newEnv(t, net16)
	first := e.manager("198.18.0.1", hostID(1))
	l1 := acquire(t, first)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	errc := make(chan error, 1)
	go func() { errc <- first.Run(ctx) }()

	twin := e.manager("198.18.0.1", hostID(1))
	l2 := acquire(t, twin)
	if l2.Subnet != l1.Subnet || l2.LeaseID == l1.LeaseID {
		t.Fatalf("the twin acquired %s on etcd lease %x; want %s taken over on a new etcd lease", l2.Subnet, l2.LeaseID, l1.Subnet)
	}
	run(t, twin)

	select {
	case err := <-errc:
		if !errors.Is(err, subnet.ErrLeaseLost) || !errors.Is(err, subnet.ErrHostIDShared) {
			t.Fatalf("Run returned %v, want ErrLeaseLost and ErrHostIDShared", err)
		}
		t.Logf("first agent stopped: %v", err)
	case <-time.After(20 * time.Second):
		resp, _ := e.cli.Get(context.Background(), "/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		t.Fatalf("the first agent did not stop after a twin took its key over; etcd is at revision %d", resp.Header.Revision)
	}
	// The twin holds the key as it wrote it, on its live etcd lease.
	eventually(t, "the twin keeps the key", func() error {
		_, id, ok := e.raw(t, l2)
		if !ok || id != l2.LeaseID {
			return fmt.Errorf("key present %v on etcd lease %x, want %x", ok, id, l2.LeaseID)
		}
		ttl, err := e.cli.TimeToLive(context.Background(), clientv3.LeaseID(l2.LeaseID))
		if err != nil || ttl.TTL <= 0 {
			return fmt.Errorf("the twin's etcd lease: %v, %v", ttl, err)
		}
		if own, _ := twin.Own(); own.LeaseID != l2.LeaseID || own.ModRevision != l2.ModRevision {
			return fmt.Errorf("the twin's lease is now %+v, want %+v untouched", own, l2)
		}
		return nil
	})
}
