package subnet

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/tests/etcdtest"
)

// TestLeaseViewAgainstList checks leaseView, which reads a full list and
// then only the keys written since, against a full list after each read,
// with leases and unusable keys written and deleted at random in between:
// every key of the list must be in the view as listed, and a key in the view
// only must have been deleted since the view's last full list.
func TestLeaseViewAgainstList(t *testing.T) {
	t.Parallel()
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

// TestSortLeasesTiesByKey: leases at one subnet address come out in key
// order whatever order they were read in, so findOurs, which takes the first
// of our leases, chooses the same one at every start.
func TestSortLeasesTiesByKey(t *testing.T) {
	p := netip.MustParsePrefix
	want := []Lease{
		{Subnet: p("10.244.1.0/24")},
		{Subnet: p("10.244.4.0/22")},
		{Subnet: p("10.244.4.0/24")},
		{Subnet: p("10.244.4.0/24"), IPv6Subnet: p("fc00:0:0:4::/64")},
		{Subnet: p("10.244.9.0/24")},
	}
	var permute func(ls []Lease, k int)
	permute = func(ls []Lease, k int) {
		if k == len(ls) {
			got := slices.Clone(ls)
			sortLeases(got)
			if !slices.EqualFunc(got, want, func(a, b Lease) bool { return a.Key() == b.Key() }) {
				t.Errorf("sortLeases(%v) = %v, want %v", leaseKeys(ls), leaseKeys(got), leaseKeys(want))
			}
			return
		}
		for i := k; i < len(ls); i++ {
			ls[k], ls[i] = ls[i], ls[k]
			permute(ls, k+1)
			ls[k], ls[i] = ls[i], ls[k]
		}
	}
	permute(slices.Clone(want), 0)
}

func leaseKeys(ls []Lease) []string {
	var ks []string
	for _, l := range ls {
		ks = append(ks, l.Key())
	}
	return ks
}
