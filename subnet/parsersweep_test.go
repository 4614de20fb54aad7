package subnet

import (
	"net/netip"
	"testing"
)

// The tests in this file come from a mutation sweep of the parsers of what
// agentd reads from etcd (config.go, lease.go, flanneldkey.go, pages.go):
// each fails on a change of those files that every other test let through.

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
