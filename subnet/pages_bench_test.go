package subnet

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/internal/etcdhistory"
	"github.com/agentd/agentd/tests/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fill5000 writes 5000 vxlan leases of about 150 bytes under prefix.
func fill5000(tb testing.TB, cli *clientv3.Client) *Registry {
	tb.Helper()
	ctx := context.Background()
	reg := NewRegistry(cli, "")
	for i := 0; i < 5000; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			kv := leaseKV(j, 0)
			ops = append(ops, clientv3.OpPut(string(kv.Key), string(kv.Value)))
		}
		if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	return reg
}

// BenchmarkList5000 measures the full reads of 5000 leases in a real etcd
// (in this process: its side of each read is counted too): List, as
// agentctl and Release use it, and the watch's list, which also fills the
// table.
func BenchmarkList5000(b *testing.B) {
	srv := etcdtest.Start(b)
	reg := fill5000(b, srv.Client(b))
	ctx := context.Background()
	b.Run("List", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			leases, _, _, err := reg.List(ctx)
			if err != nil || len(leases) != 5000 {
				b.Fatalf("%d leases, %v", len(leases), err)
			}
		}
	})
	b.Run("relist", func(b *testing.B) {
		net := &Config{Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24}
		m := NewManager(reg, net, ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1")})
		b.ReportAllocs()
		for b.Loop() {
			h := etcdhistory.History{}
			if err := m.relist(ctx, &h, nil, false); err != nil {
				b.Fatal(err)
			}
		}
		if n := len(m.Peers()); n != 5000 {
			b.Fatalf("%d peers", n)
		}
	})
}

// BenchmarkListPageSize is BenchmarkList5000's List with pages of several
// sizes; 5000 is one request.
func BenchmarkListPageSize(b *testing.B) {
	srv := etcdtest.Start(b)
	reg := fill5000(b, srv.Client(b))
	ctx := context.Background()
	for _, size := range []int64{25, 50, 100, 200, 500, 1000, 5000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			reg.pageSize = size
			b.ReportAllocs()
			for b.Loop() {
				leases, _, _, err := reg.List(ctx)
				if err != nil || len(leases) != 5000 {
					b.Fatalf("%d leases, %v", len(leases), err)
				}
			}
		})
	}
}
