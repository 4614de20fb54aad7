package subnet_test

import (
	"context"
	"encoding/json"
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
// The one started second takes the first one's key over, as a restarted host
// takes its own. The first must then give the subnet up with
// ErrHostIDShared, not take it back. Before, with a lease each took the key
// back from the other and revoked the other's etcd lease (etcd at revision
// 1520 after 20 s, every write waking every peer, with the key deleted and
// recreated at each of them); with a reservation for the shared public IP
// and two VTEP MACs, each wrote its value back over the other's (12 000
// writes in 3 s).
func TestOwnLeaseTakenOverByTwinStopsWithError(t *testing.T) {
	t.Parallel()
	for _, reservation := range []bool{false, true} {
		t.Run(fmt.Sprintf("reservation=%v", reservation), func(t *testing.T) {
			e := newEnv(t, net16)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			if reservation {
				if _, err := e.cli.Put(ctx, prefix+"/subnets/10.244.7.0-24", `{"PublicIP":"198.18.0.1"}`); err != nil {
					t.Fatal(err)
				}
			}
			acquireWith := func(m *subnet.Manager, mac string) subnet.Lease {
				t.Helper()
				l, err := m.Acquire(ctx, "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"`+mac+`"}`))
				if err != nil {
					t.Fatalf("acquire: %v", err)
				}
				return l
			}
			first := e.manager("198.18.0.1", hostID(1))
			l1 := acquireWith(first, "aa:bb:cc:dd:ee:01")
			if l1.Reservation() != reservation {
				t.Fatalf("acquired %+v, want a reservation: %v", l1, reservation)
			}
			errc := make(chan error, 1)
			go func() { errc <- first.Run(ctx) }()

			twin := e.manager("198.18.0.1", hostID(1))
			l2 := acquireWith(twin, "aa:bb:cc:dd:ee:02")
			if l2.Subnet != l1.Subnet || l2.ModRevision <= l1.ModRevision || !reservation && l2.LeaseID == l1.LeaseID {
				t.Fatalf("the twin acquired %+v; want %s taken over", l2, l1.Subnet)
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
			// The twin holds the key as it wrote it.
			eventually(t, "the twin keeps the key", func() error {
				val, id, ok := e.raw(t, l2)
				if !ok || id != l2.LeaseID {
					return fmt.Errorf("key present %v on etcd lease %x, want %x", ok, id, l2.LeaseID)
				}
				if want, _ := json.Marshal(l2.Attrs); val != string(want) {
					return fmt.Errorf("key holds %s, want the twin's %s", val, want)
				}
				if !reservation {
					ttl, err := e.cli.TimeToLive(context.Background(), clientv3.LeaseID(l2.LeaseID))
					if err != nil || ttl.TTL <= 0 {
						return fmt.Errorf("the twin's etcd lease: %v, %v", ttl, err)
					}
				}
				if own, _ := twin.Own(); own.LeaseID != l2.LeaseID || own.ModRevision != l2.ModRevision {
					return fmt.Errorf("the twin's lease is now %+v, want %+v untouched", own, l2)
				}
				return nil
			})
		})
	}
}
