package subnet

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/etcdtest"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// The tests in this file come from a mutation sweep of the parsers of what
// agentd reads from etcd (config.go, lease.go, flanneldkey.go, pages.go):
// each fails on a change of those files that every other test let through.

// TestValidateRefusesIPv4Off: Validate, for configs built in code, refuses
// EnableIPv4 false as ParseConfig does, even when the IPv4 pool is valid.
func TestValidateRefusesIPv4Off(t *testing.T) {
	c := &Config{Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
		SubnetMin: netip.MustParseAddr("10.244.1.0"), SubnetMax: netip.MustParseAddr("10.244.9.0"), BackendType: "vxlan"}
	var ce *ConfigError
	if err := c.Validate(); !errors.As(err, &ce) || ce.Key != "EnableIPv4" {
		t.Fatalf("Validate(%v) = %v, want a *ConfigError naming EnableIPv4", c, err)
	}
	c.EnableIPv4 = true
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate(%v) = %v with EnableIPv4 true", c, err)
	}
}

// TestParseConfigRefusesMappedIPv6Network: an IPv4-mapped prefix
// ("::ffff:10.0.0.0/104") is refused as IPv6Network, as it is as Network:
// its addresses are IPv4 ones, and no IPv6 subnet key can name them
// (ParseSubnetKey refuses a mapped IPv6 half).
func TestParseConfigRefusesMappedIPv6Network(t *testing.T) {
	const doc = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"::ffff:10.0.0.0/104"}`
	c, err := ParseConfig([]byte(doc))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Key != "IPv6Network" {
		t.Fatalf("ParseConfig(%s) = %v, %v; want a *ConfigError naming IPv6Network", doc, c, err)
	}
	if want := `config: "IPv6Network": "::ffff:10.0.0.0/104" is not an IPv6 CIDR`; err.Error() != want {
		t.Errorf("error\n got %s\nwant %s", err, want)
	}
}

// TestValidLeaseTakesEveryIPv6SubnetOfTheRange: in a dual-stack network a
// lease's IPv6 subnet may be any of the IPv6 range (flanneld picks it on its
// own), however far from IPv6SubnetMin. ValidLease capped its index at
// SubnetCount's cap, math.MaxInt32: in fc00::/16 (2^48 - 1 /64s from
// IPv6SubnetMin) it refused fc00:0:8000::/64, the 2^31-th, and every later
// one up to IPv6SubnetMax ("is beyond the first 2147483647 subnets of the
// pool").
func TestValidLeaseTakesEveryIPv6SubnetOfTheRange(t *testing.T) {
	c, err := ParseConfig([]byte(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/16"}`))
	if err != nil {
		t.Fatal(err)
	}
	sn := netip.MustParsePrefix("10.244.5.0/24")
	for _, s := range []string{
		"fc00:0:0:1::/64",          // IPv6SubnetMin
		"fc00:0:7fff:ffff::/64",    // index 2^31 - 2
		"fc00:0:8000::/64",         // index 2^31 - 1, math.MaxInt32
		"fc00:1::/64",              // index 2^32 - 1
		"fc00:ffff:ffff:ffff::/64", // IPv6SubnetMax
	} {
		if err := c.ValidLease(sn, netip.MustParsePrefix(s)); err != nil {
			t.Errorf("ValidLease(%s, %s) = %v", sn, s, err)
		}
	}
	for _, s := range []string{
		"fc00::/64",            // the first subnet, before IPv6SubnetMin
		"fc01::/64",            // outside IPv6Network
		"fc00:0:8000::/63",     // not an IPv6SubnetLen
		"fc00:0:8000:0:1::/64", // host bits set
	} {
		if err := c.ValidLease(sn, netip.MustParsePrefix(s)); err == nil {
			t.Errorf("ValidLease(%s, %s) = nil", sn, s)
		}
	}
}

// TestParseSubnetKeySaysHostBits: a key whose address has host bits set
// ("10.244.5.1-24") is refused saying so, not only that it is not the
// canonical key "10.244.5.0-24", which the error names as well.
func TestParseSubnetKeySaysHostBits(t *testing.T) {
	for key, want := range map[string]string{
		"10.244.5.1-24":                  "10.244.5.1 has host bits set for /24",
		"10.244.5.0-24&fc00:0:0:5::1-64": "fc00:0:0:5::1 has host bits set for /64",
	} {
		_, _, err := ParseSubnetKey(key)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSubnetKey(%q): %v, want it to say %s", key, err, want)
		}
	}
}

// TestParseSubnetKeyRefusesMappedIPv6Half: an IPv6 half that is an
// IPv4-mapped address, written as agentd would write it
// ("::ffff:10.0.0.0-120", its canonical spelling), is no IPv6 subnet.
// flanneld reads no lease in the key either: its pattern takes no dots in
// an IPv6 half, so it matches only the tail "10.0.0.0-120", whose length is
// over 31.
func TestParseSubnetKeyRefusesMappedIPv6Half(t *testing.T) {
	const key = "10.244.5.0-24&::ffff:10.0.0.0-120"
	if sn, sn6, err := ParseSubnetKey(key); !errors.Is(err, ErrNotSubnetKey) {
		t.Fatalf("ParseSubnetKey(%q) = %s, %s, %v; want an error wrapping ErrNotSubnetKey", key, sn, sn6, err)
	}
	if sn, sn6, ok := FlanneldSubnetKey(key); ok {
		t.Fatalf("FlanneldSubnetKey(%q) = %s, %s, want no lease", key, sn, sn6)
	}
}

// siblingLease is a value flanneld reads as a lease, for keys beside
// <prefix>/subnets/.
const siblingLease = `{"PublicIP":"198.18.0.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}}`

// TestListSiblingsInKeyOrderAtItsRevision: the keys beside
// <prefix>/subnets/ that flanneld reads as leases come after List's other
// bad entries in key order, every time, and as they were at the revision
// List returns: a key written there while the list's pages were read is
// not among them.
func TestListSiblingsInKeyOrderAtItsRevision(t *testing.T) {
	t.Parallel()
	_, reg, hook, put := pagedRegistry(t, 2)
	ctx := context.Background()
	for i := range 5 {
		kv := leaseKV(i, 0)
		put(string(kv.Key), string(kv.Value))
	}
	pre := DefaultPrefix + "/subnets"
	want := []string{pre + "-old/10.0.9.0-24", pre + ".bak/10.0.8.0-24", pre + "10.0.7.0-024", pre + "x/10.0.6.0-24"}
	for _, k := range []int{3, 0, 2, 1} { // not in key order
		put(want[k], siblingLease)
	}
	slices.Sort(want)
	late := pre + "-late/10.0.10.0-24"
	hook.after = func(n int, _ *clientv3.GetResponse) {
		if n == 1 { // the first page of the first List
			put(late, siblingLease)
		}
	}
	for i := range 10 {
		leases, bad, rev, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, b := range bad {
			got = append(got, b.Key)
		}
		if i == 0 {
			if len(leases) != 5 || !slices.Equal(got, want) {
				t.Fatalf("List at revision %d: %d leases, bad entries %q; want 5, %q (not %s, written after the first page)",
					rev, len(leases), got, want, late)
			}
			want = append(want, late)
			slices.Sort(want)
			continue
		}
		if !slices.Equal(got, want) {
			t.Fatalf("List %d: bad entries %q, want %q", i, got, want)
		}
	}
}

// TestUnchangedSinceCoversSiblings: the compares UnchangedSince(rev) hold
// while nothing under <prefix>/subnets/ or beside it (where flanneld reads
// leases) was written after rev, a key written at rev itself included, and
// fail once a key there is written after rev; writes elsewhere change
// nothing.
func TestUnchangedSinceCoversSiblings(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	reg := NewRegistry(cli, "")
	ctx := context.Background()
	holds := func(rev int64) bool {
		t.Helper()
		resp, err := cli.Txn(ctx).If(reg.UnchangedSince(rev)...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded
	}
	for _, k := range []string{reg.SubnetsPrefix() + "10.0.9.0-24", DefaultPrefix + "/subnets-old/10.0.9.0-24"} {
		if _, err := cli.Put(ctx, k, siblingLease); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		key  string
		hold bool
	}{
		{DefaultPrefix + "/config", true},
		{DefaultPrefix + "/subnetz/10.0.5.0-24", true},
		{reg.SubnetsPrefix() + "10.0.5.0-24", false},
		{DefaultPrefix + "/subnets-old/10.0.5.0-24", false},
		{DefaultPrefix + "/subnets10.0.5.0-024", false},
	} {
		// The last write before the List, the sibling key above or the
		// key of the case before, is at rev.
		_, _, rev, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !holds(rev) {
			t.Errorf("UnchangedSince(%d) fails with nothing written since", rev)
		}
		if _, err := cli.Put(ctx, tc.key, siblingLease); err != nil {
			t.Fatal(err)
		}
		if got := holds(rev); got != tc.hold {
			t.Errorf("UnchangedSince(%d) holds %v after a write of %s, want %v", rev, got, tc.key, tc.hold)
		}
	}
}

// TestFlanneldKeyHostBitsInEitherHalf: a dual-stack key flanneld reads has
// host bits set when either half has them, the IPv4 one too.
func TestFlanneldKeyHostBitsInEitherHalf(t *testing.T) {
	for key, want := range map[string]bool{
		"10.244.5.0-24&fc00:0:0:5::-64":  false,
		"10.244.5.7-24&fc00:0:0:5::-64":  true,
		"10.244.5.0-24&fc00:0:0:5::7-64": true,
		"10.244.5.7-24&fc00:0:0:5::7-64": true,
	} {
		sn, sn6, hostBits, ok := flanneldSubnetKey(key)
		if !ok || hostBits != want {
			t.Errorf("flanneldSubnetKey(%q) = %s, %s, host bits %v, %v; want host bits %v", key, sn, sn6, hostBits, ok, want)
		}
	}
}

// TestPagedListRestartsWhenClusterChanges: a page answered by another etcd
// cluster (another cluster ID: etcd replaced on the same endpoints between
// two pages) makes the list start again, so its keys never mix with the
// pages read before.
func TestPagedListRestartsWhenClusterChanges(t *testing.T) {
	t.Parallel()
	writer, reg, hook, _ := pagedRegistry(t, 2)
	ctx := context.Background()
	var want []string
	for i := range 5 {
		kv := leaseKV(i, 0)
		if _, err := writer.Put(ctx, string(kv.Key), string(kv.Value)); err != nil {
			t.Fatal(err)
		}
		want = append(want, string(kv.Key))
	}
	foreign := leaseKV(200, 1)
	hook.after = func(n int, resp *clientv3.GetResponse) {
		if n == 2 { // the second page of the first try, from another cluster
			resp.Header.ClusterId++
			resp.Kvs = []*mvccpb.KeyValue{foreign}
		}
	}
	leases, bad, _, err := reg.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range leases {
		got = append(got, reg.SubnetsPrefix()+l.Key())
	}
	if !slices.Equal(got, want) || len(bad) != 0 {
		t.Fatalf("List read %q and %d other keys; want %q, none: the keys of the cluster it started with", got, len(bad), want)
	}
	// 2 pages of the first try (the second from the other cluster), 3 of
	// the second try, and one request for each range beside
	// <prefix>/subnets/.
	if hook.gets != 2+3+2 {
		t.Errorf("%d requests, want 2 before the other cluster's page, 3 after, 2 beside", hook.gets)
	}
}

// TestListKeysSinceReadsOnlyLaterWrites: listKeys(since) reads the keys
// written after revision since, not the one written at since, which the
// reader already holds.
func TestListKeysSinceReadsOnlyLaterWrites(t *testing.T) {
	t.Parallel()
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	reg := NewRegistry(cli, "")
	ctx := context.Background()
	var revs []int64
	for i := range 3 {
		kv := leaseKV(i, 0)
		resp, err := cli.Put(ctx, string(kv.Key), string(kv.Value))
		if err != nil {
			t.Fatal(err)
		}
		revs = append(revs, resp.Header.Revision)
	}
	keys, _, err := reg.listKeys(ctx, revs[1])
	if err != nil {
		t.Fatal(err)
	}
	if want := string(leaseKV(2, 0).Key); len(keys) != 1 || keys[0].key != want {
		var got []string
		for _, k := range keys {
			got = append(got, k.key)
		}
		t.Fatalf("listKeys(%d) read %q, want only %s, written at %d", revs[1], got, want, revs[2])
	}
}
