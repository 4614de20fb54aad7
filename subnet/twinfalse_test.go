package subnet_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// TestEtcdEmptiedThenRestoredIsNoTwin: etcd loses its data while the agent
// runs (a cluster rebuilt empty), the agent recreates its key in the new,
// short history, and the operator then restores the last backup, taken before
// the loss: it holds our key on the etcd lease we had then, at a revision
// above the one of our recreated key. That value is ours (this run's, or an
// earlier run's of this host), not a takeover by another agentd with our
// identity: the agent must take its
// key back and keep its subnet, not stop with ErrHostIDShared (which gives
// the host a new identity and moves it, and every host of the cluster with
// it, to another subnet at its restart). Both ways of restoring are covered,
// and backups taken before one or two restarts of the agent (our key on the
// etcd lease of an earlier run: the one this run's Acquire took the key over
// from, or one this run never saw).
func TestEtcdEmptiedThenRestoredIsNoTwin(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bump uint64
		// restarts: how many times the agent restarts after the backup.
		restarts int
	}{
		{"revision back to the snapshot's", 0, 0},
		{"revision bumped and compacted", 1_000_000, 0},
		{"backup taken before our restart", 0, 1},
		{"backup taken before our last two restarts", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startRestartable(t, 0)
			e := r.env(net16)
			ctx := context.Background()
			// The backup's history is well past the revisions the
			// emptied etcd reaches before the restore.
			for i := 0; i < 200; i++ {
				if _, err := e.cli.Put(ctx, "/unrelated", "x"); err != nil {
					t.Fatal(err)
				}
			}
			a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
			first := acquire(t, a)
			var snap string
			if tc.restarts > 0 {
				snap = r.snapshot(e.cli)
			}
			for range tc.restarts {
				// The previous run stopped (killed): the next takes
				// its key over.
				prev, _ := a.Own()
				a = e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
				if l := acquire(t, a); l.Subnet != first.Subnet || l.LeaseID == prev.LeaseID {
					t.Fatalf("restarted: acquired %+v, want %s taken over from etcd lease %x", l, first.Subnet, prev.LeaseID)
				}
			}
			held, _ := a.Own()
			returned := runWatched(t, a)
			<-a.PeersSynced()
			if tc.restarts == 0 {
				snap = r.snapshot(e.cli)
			}

			r.stop()
			r.start(false)
			if _, err := e.cli.Put(ctx, prefix+"/config", net16); err != nil {
				t.Fatal(err)
			}
			eventuallyWithin(t, 40*time.Second, "own key recreated in the emptied etcd", func() error {
				if ok, err := returned(); ok {
					t.Fatalf("Run returned: %v", err)
				}
				_, id, ok := e.raw(t, first)
				if l, _ := a.Own(); !ok || l.LeaseID != id || id == held.LeaseID {
					return fmt.Errorf("own key present %v on etcd lease %x, Own on %x", ok, id, l.LeaseID)
				}
				return nil
			})
			recreated, _ := a.Own()
			if recreated.ModRevision >= first.ModRevision {
				t.Fatalf("recreated at revision %d, want below the backup's %d", recreated.ModRevision, first.ModRevision)
			}

			r.restore(snap, tc.bump)
			eventuallyWithin(t, 40*time.Second, "own key held in the restored etcd", func() error {
				if ok, err := returned(); ok {
					if errors.Is(err, subnet.ErrHostIDShared) {
						t.Fatalf("Run took the restored backup's value of our own key for another agentd's: %v", err)
					}
					t.Fatalf("Run returned: %v", err)
				}
				val, id, ok := e.raw(t, first)
				if !ok || !strings.Contains(val, hostID(1)) {
					return fmt.Errorf("own key %s (present %v)", val, ok)
				}
				if l, _ := a.Own(); l.Subnet != first.Subnet || l.LeaseID != id || l.ModRevision <= first.ModRevision {
					return fmt.Errorf("Own = %+v, the key on etcd lease %x", l, id)
				}
				return nil
			})
		})
	}
}

// TestLateCommitOfOwnWriteIsNoTwin: the agent writes its key on a new etcd
// lease of its own (recreating it after it was deleted, or taking it over in
// place after its etcd lease was revoked under a value naming nobody); etcd
// reports the write failed ("request timed out") while it is still on its
// way, settle's read does not find it yet, and the revoke of that etcd lease
// fails too (etcd's disk stalled, say); then the write commits. Our key on
// that etcd lease is our own write, not another agentd's with our identity:
// the agent must take it over and keep its subnet, not stop with
// ErrHostIDShared.
func TestLateCommitOfOwnWriteIsNoTwin(t *testing.T) {
	t.Parallel()
	for _, inPlace := range []bool{false, true} {
		t.Run(fmt.Sprintf("inPlace=%v", inPlace), func(t *testing.T) {
			testLateCommit(t, inPlace)
		})
	}
}

func testLateCommit(t *testing.T, inPlace bool) {
	e := newEnv(t, net16)
	ctx := context.Background()
	var armed, blockRestore, committed atomic.Bool
	var mu sync.Mutex
	var late func() error // the held-back write, sent when called
	var first subnet.Lease
	var lateLease int64
	cli := e.interceptedClient(t, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		switch r := req.(type) {
		case *etcdserverpb.TxnRequest:
			id := int64(0)
			if len(r.Success) == 1 {
				id = r.Success[0].GetRequestPut().GetLease()
			}
			switch {
			case id == 0:
			case id == first.LeaseID:
				// Our value written back on our etcd lease fails
				// (not sent) until the test has revoked that lease.
				if blockRestore.Load() {
					return rpctypes.ErrGRPCTimeout
				}
			case armed.CompareAndSwap(true, false):
				mu.Lock()
				lateLease = id
				late = func() error {
					return invoker(context.Background(), method, req, new(etcdserverpb.TxnResponse), cc, opts...)
				}
				mu.Unlock()
				return rpctypes.ErrGRPCTimeout
			}
		case *etcdserverpb.LeaseRevokeRequest:
			mu.Lock()
			defer mu.Unlock()
			if late != nil && r.ID == lateLease {
				if err := late(); err != nil {
					t.Errorf("the held-back write: %v", err)
				}
				late = nil
				committed.Store(true)
			}
			if r.ID == lateLease {
				// Every revoke of it fails, as the client's does
				// that gives up after revokeTimeout.
				return context.DeadlineExceeded
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour,
		PreviousSubnet: netip.MustParsePrefix("10.244.1.0/24"),
	})
	first = acquire(t, m)
	returned := runWatched(t, m)
	key := e.reg.LeaseKey(first.Subnet, first.IPv6Subnet)
	armed.Store(true)
	if inPlace {
		blockRestore.Store(true)
		g, err := e.cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Put(ctx, key, "not a lease", clientv3.WithLease(g.ID)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(first.LeaseID)); err != nil {
			t.Fatal(err)
		}
		blockRestore.Store(false)
	} else if _, err := e.cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	eventually(t, "own key written again", func() error {
		if ok, err := returned(); ok {
			if errors.Is(err, subnet.ErrHostIDShared) {
				t.Fatalf("Run took its own write, committed late, for another agentd's: %v", err)
			}
			t.Fatalf("Run returned: %v", err)
		}
		if !committed.Load() {
			return errors.New("the held-back write not sent yet")
		}
		val, id, ok := e.raw(t, first)
		if l, _ := m.Own(); !ok || !strings.Contains(val, hostID(1)) || l.Subnet != first.Subnet || l.LeaseID != id || id == first.LeaseID {
			return fmt.Errorf("own key %s (present %v) on etcd lease %x; Own %+v", val, ok, id, l)
		}
		return nil
	})
	if got, _ := m.Own(); inPlace && got.CreateRevision != first.CreateRevision {
		t.Errorf("own key created again at revision %d, want taken over in place (%d)", got.CreateRevision, first.CreateRevision)
	}
}
