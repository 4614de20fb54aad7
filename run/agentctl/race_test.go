package main

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
)

// beforeFirstTxn makes c run write once, just before agentctl's first
// transaction reaches etcd: a change by an agent or a second operator
// between what agentctl read and what it writes.
func (c *ctl) beforeFirstTxn(write func()) {
	done := false
	c.intercept = func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == "/etcdserverpb.KV/Txn" && !done {
			done = true
			write()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

// TestConfigInitRaceWithNewLease: an agent takes a subnet under the old
// config after config init has checked the leases and before it writes. The
// new config, which would strand that lease, is not written: the write is
// conditional on every lease key being as the check read it.
func TestConfigInitRaceWithNewLease(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	before, _, _ := c.get(prefix + "/config")

	c.beforeFirstTxn(func() { c.liveLease("10.244.200.0/24", "198.18.0.2", "aa:bb:cc:dd:ee:02") })
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/17"}, "changed while this command ran", "nothing written", "run it again")
	if v, _, _ := c.get(prefix + "/config"); v != before {
		t.Fatalf("config written over a lease taken meanwhile, which it strands: %s", v)
	}
	c.intercept = nil
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/17"}, "invalidate 1 lease(s)", "10.244.200.0-24")
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "23")
}

// TestReserveRace: two operators reserve two subnets for the same host at
// once. The second write is refused, so the host has one reservation; and
// a reservation overlapping a lease written meanwhile is refused too.
func TestReserveRace(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")

	c.beforeFirstTxn(func() {
		if _, err := c.cli.Put(context.Background(), prefix+"/subnets/10.244.9.0-24", `{"PublicIP":"198.18.0.3"}`); err != nil {
			t.Fatal(err)
		}
	})
	c.wantFail(1, []string{"lease", "reserve", "10.244.8.0/24", "--public-ip", "198.18.0.3"}, "changed while this command ran", "nothing written")
	if _, _, ok := c.get(prefix + "/subnets/10.244.8.0-24"); ok {
		t.Error("198.18.0.3 got a second reservation, 10.244.8.0/24 beside 10.244.9.0/24")
	}

	c.beforeFirstTxn(func() { c.liveLease("10.244.10.0/23", "198.18.0.1", "aa:bb:cc:dd:ee:01") })
	c.wantFail(1, []string{"lease", "reserve", "10.244.11.0/24", "--public-ip", "198.18.0.4"}, "changed while this command ran")
	if _, _, ok := c.get(prefix + "/subnets/10.244.11.0-24"); ok {
		t.Error("10.244.11.0/24 reserved inside 10.244.10.0/23, leased meanwhile")
	}
	c.intercept = nil
	c.wantFail(1, []string{"lease", "reserve", "10.244.11.0/24", "--public-ip", "198.18.0.4"}, "overlaps 10.244.10.0/23")
	out := c.mustRun("lease", "reserve", "10.244.12.0/24", "--public-ip", "198.18.0.4")
	if !strings.Contains(out, "reserved 10.244.12.0/24 for 198.18.0.4") {
		t.Errorf("reserve output %q", out)
	}
}
