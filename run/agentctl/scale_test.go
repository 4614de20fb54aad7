package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"google.golang.org/grpc"
)

// TestLeasesManyHostsFarEtcd: `leases` asks etcd for the time left of every
// host's etcd lease. With 400 hosts and etcd 10 ms away (the latency is
// added to each TimeToLive request by the test client), one request after
// the other took 4 s, past --timeout=2s, and the command failed; the
// requests are now made several at a time.
func TestLeasesManyHostsFarEtcd(t *testing.T) {
	const hosts = 400
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "26")
	ctx := context.Background()
	reg := subnet.NewRegistry(c.cli, prefix)
	for i := range hosts {
		g, err := c.cli.Grant(ctx, 3600)
		if err != nil {
			t.Fatal(err)
		}
		attrs := subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), BackendType: "vxlan",
			BackendData: json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}`)}
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(1 + i/4), byte(i % 4 * 64)}), 26)
		if _, ok, err := reg.Create(ctx, sn, netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
			t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
		}
	}
	c.intercept = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == "/etcdserverpb.Lease/LeaseTimeToLive" {
			select {
			case <-time.After(10 * time.Millisecond):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var doc struct{ Leases []leaseRow }
	if err := json.Unmarshal([]byte(c.mustRun("--timeout=2s", "leases", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Leases) != hosts {
		t.Fatalf("%d leases listed, want %d", len(doc.Leases), hosts)
	}
	for _, l := range doc.Leases {
		if l.TTLSeconds == nil || *l.TTLSeconds < 3000 {
			t.Fatalf("lease %s: TTL %v, want the etcd lease's time left", l.Subnet, l.TTLSeconds)
		}
	}
}
