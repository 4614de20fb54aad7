package subnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/agentd/agentd/tests/etcdtest"
)

// TestLeaseViewAgainstList checks leaseView, which reads a full list and
// then only the keys written since, against a full list after each read,
// with leases and unusable keys written and deleted at random in between:
// every key of the list must be in the view as listed, and a key in the view
// only must have been deleted since the view's last full list.
func TestLeaseViewAgainstList(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	reg := NewRegistry(cli, "/agentd-view-test")
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, 2))
	v := &leaseView{reg: reg}
	deleted := map[string]bool{} // since the view's last full list
	for round := range 200 {
		for range rnd.IntN(4) {
			key := reg.SubnetsPrefix() + fmt.Sprintf("10.244.%d.0-24", rnd.IntN(20))
			var err error
			switch op := rnd.IntN(5); {
			case op < 2:
				_, err = cli.Delete(ctx, key)
				deleted[key] = true
			case op < 4:
				_, err = cli.Put(ctx, key, fmt.Sprintf(`{"PublicIP":"198.18.0.%d","BackendType":"host-gw"}`, 1+rnd.IntN(200)))
			default:
				_, err = cli.Put(ctx, key, "not a lease")
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if rnd.IntN(10) == 0 {
			v.full = true
		}
		wasFull := v.byKey == nil || v.full || v.since+1 >= fullListEvery
		if err := v.read(ctx); err != nil {
			t.Fatal(err)
		}
		if wasFull != !v.partial() {
			t.Fatalf("round %d: full list %v, but partial() says %v", round, wasFull, v.partial())
		}
		if wasFull {
			deleted = map[string]bool{}
		}
		leases, bad, _, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		inView := map[string]int64{}
		for _, l := range v.leases {
			inView[reg.LeaseKey(l.Subnet, l.IPv6Subnet)] = l.ModRevision
		}
		for _, b := range v.bad {
			if _, dup := inView[b.Key]; dup {
				t.Fatalf("round %d: %s both a lease and a bad key in the view", round, b.Key)
			}
			inView[b.Key] = -b.ModRevision
		}
		listed := map[string]int64{}
		for _, l := range leases {
			listed[reg.LeaseKey(l.Subnet, l.IPv6Subnet)] = l.ModRevision
		}
		for _, b := range bad {
			listed[b.Key] = -b.ModRevision
		}
		for k, rev := range listed {
			if inView[k] != rev {
				t.Fatalf("round %d: %s listed at revision %d (negative: unusable), in the view at %d", round, k, rev, inView[k])
			}
		}
		for k := range inView {
			if _, ok := listed[k]; !ok && (wasFull || !deleted[k]) {
				t.Fatalf("round %d: %s in the view, not listed, and not deleted since the view's full list", round, k)
			}
		}
	}
}
