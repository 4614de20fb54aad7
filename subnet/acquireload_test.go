package subnet_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// rangeReads records the size of each answer to a read (Range) that a client
// got from etcd, as received.
type rangeReads struct {
	mu    sync.Mutex
	sizes []int
}

// client returns a client of e's etcd that records its reads in r, its
// unary calls passing through f, when not nil, on their way to etcd.
func (r *rangeReads) client(t *testing.T, e *env, f grpc.UnaryClientInterceptor) *clientv3.Client {
	t.Helper()
	cfg := e.srv.ClientConfig()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithStatsHandler(readCounter(func(method string, n int) {
		if method == "/etcdserverpb.KV/Range" {
			r.mu.Lock()
			r.sizes = append(r.sizes, n)
			r.mu.Unlock()
		}
	})))
	if f != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainUnaryInterceptor(f))
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func (r *rangeReads) total() (n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.sizes {
		n += s
	}
	return n
}

// manyLeases writes n leases of other hosts, the first n subnets of the
// pool from skip on, and returns the size of a list of all keys under the
// subnets prefix.
func (e *env) manyLeases(t *testing.T, n, skip int) int {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		sn, _ := e.net.NthSubnet(skip + i)
		attrs := subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}),
			BackendType: "vxlan", BackendData: vxlanData, HostID: fmt.Sprintf("%032x", 1<<20+i)}
		if _, ok, err := e.reg.Create(ctx, sn, netip.Prefix{}, attrs, 0); err != nil || !ok {
			t.Fatalf("write lease of %s: %v %v", sn, ok, err)
		}
	}
	var r rangeReads
	if _, err := r.client(t, e, nil).Get(ctx, e.reg.SubnetsPrefix(), clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	return r.total()
}

// TestAcquireRetryReadsOnlyWhatChanged: a host that lost the race for the
// subnet it picked reads, before it picks again, only the keys written since
// its list, not every lease again: at 5000 hosts a list is a megabyte, read
// again by every loser of every round of a storm. Here 300 leases are there
// and a rival takes the first 3 keys the host asks for just before it does.
func TestAcquireRetryReadsOnlyWhatChanged(t *testing.T) {
	t.Parallel()
	const losses = 3
	e := newEnv(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`)
	list := e.manyLeases(t, 300, 0)
	var tried []string
	var reads rangeReads
	cli := reads.client(t, e, losingRaces(e, losses, &tried))
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net,
		subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour})
	l := acquire(t, m)
	if len(tried) != losses+1 || e.reg.LeaseKey(l.Subnet, l.IPv6Subnet) != tried[losses] {
		t.Fatalf("leased %s after trying %q, want the %d-th key tried", l.Subnet, tried, losses+1)
	}
	// One list, and for each loss the rival's key: well under two lists.
	if got := reads.total(); got > list*3/2 {
		t.Errorf("read %d bytes in %d reads (%v) after %d lost races; a list of the %d leases is %d bytes: each retry read them all again",
			got, len(reads.sizes), reads.sizes, losses, 300, list)
	}
	t.Logf("read %d bytes in reads of %v; one list is %d bytes", reads.total(), reads.sizes, list)
}

// TestAcquireOwnLeaseReadsOnlyItsSubnet: a host restarting with its own live
// lease and the subnet.env naming it takes the lease back reading that
// subnet's keys only, not every lease: a whole cluster powered up at once
// otherwise reads the full list twice per host (Acquire's, then the watch's).
// It is the same key, moved to a new etcd lease, as before.
func TestAcquireOwnLeaseReadsOnlyItsSubnet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`)
	list := e.manyLeases(t, 300, 1)
	old := acquire(t, e.manager("198.18.0.1", hostID(1), pinned("10.0.1.0/24")))
	if old.Subnet != netip.MustParsePrefix("10.0.1.0/24") {
		t.Fatalf("first run leased %s", old.Subnet)
	}
	var reads rangeReads
	cli := reads.client(t, e, nil)
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1"),
		HostID: hostID(1), TTL: time.Hour, PreviousSubnet: old.Subnet, PreviousHostID: hostID(1)})
	l := acquire(t, m)
	if l.Subnet != old.Subnet || l.IPv6Subnet != old.IPv6Subnet || l.LeaseID == old.LeaseID || l.LeaseID == 0 {
		t.Fatalf("restart leased %s on etcd lease %x, want %s on a new etcd lease (was %x)", l.Subnet, l.LeaseID, old.Subnet, old.LeaseID)
	}
	if val, id, ok := e.raw(t, l); !ok || id != l.LeaseID {
		t.Fatalf("key %q on etcd lease %x, want on %x", val, id, l.LeaseID)
	}
	if got := reads.total(); got > list/10 {
		t.Errorf("read %d bytes in reads of %v to take back our own lease; a list of the %d leases is %d bytes", got, reads.sizes, 301, list)
	}
	t.Logf("read %d bytes in reads of %v; one list is %d bytes", reads.total(), reads.sizes, list)
}

// TestAcquireRetrySeesFreedSubnet: after a lost race the host reads only the
// keys written since its list, which does not show keys deleted meanwhile.
// With the pool then looking full it must list again, not fail: here the
// pool has 3 subnets, 2 held; the rival takes the third just before the
// host's create and frees one of the other two.
func TestAcquireRetrySeesFreedSubnet(t *testing.T) {
	t.Parallel()
	e := newEnv(t, `{"Network":"10.244.0.0/22","SubnetLen":24,"Backend":{"Type":"vxlan"}}`)
	if n := e.net.SubnetCount(); n != 3 {
		t.Fatalf("pool of %d subnets, want 3", n)
	}
	e.manyLeases(t, 2, 0)
	freed, _ := e.net.NthSubnet(1)
	rival := `{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}`
	done := false
	cli := e.interceptedClient(t, func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*etcdserverpb.TxnRequest); ok && !done && len(r.Compare) == 1 &&
			r.Compare[0].Target == etcdserverpb.Compare_VERSION && r.Compare[0].GetVersion() == 0 {
			done = true
			if _, err := e.cli.Put(ctx, string(r.Compare[0].Key), rival); err != nil {
				return err
			}
			if _, err := e.cli.Delete(ctx, e.reg.LeaseKey(freed, netip.Prefix{})); err != nil {
				return err
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net,
		subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour})
	if l := acquire(t, m); l.Subnet != freed {
		t.Fatalf("leased %s, want the freed %s", l.Subnet, freed)
	}
}
