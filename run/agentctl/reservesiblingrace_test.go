package main

import (
	"context"
	"testing"
)

// TestReserveRaceBesideSubnets: a key flanneld reads as a lease is written
// beside <prefix>/subnets/ (a copy kept in <prefix>/subnets-old/, or
// <prefix>/subnets10.244.9.0-024: flanneld reads <prefix>/subnets with no
// slash after it) after lease reserve listed the keys and before it
// writes. The reservation is not written: its transaction holds while no
// key of the ranges its list read changed, beside <prefix>/subnets/ as
// under it. Before, it guarded <prefix>/subnets/ alone, and reserved the
// subnet flanneld hosts route to the new key's PublicIP.
func TestReserveRaceBesideSubnets(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	for _, tc := range []struct{ sn, key string }{
		{"10.244.8.0/24", prefix + "/subnets-old/10.244.8.0-24"},
		{"10.244.9.0/24", prefix + "/subnets10.244.9.0-024"},
	} {
		c.beforeFirstTxn(func() {
			if _, err := c.cli.Put(context.Background(), tc.key, `{"PublicIP":"198.18.0.2","BackendType":"vxlan"}`); err != nil {
				t.Fatal(err)
			}
		})
		c.wantFail(1, []string{"lease", "reserve", tc.sn, "--public-ip", "198.18.0.3"}, "changed while this command ran", "nothing written")
		c.intercept = nil
		c.wantFail(1, []string{"lease", "reserve", tc.sn, "--public-ip", "198.18.0.3"}, tc.key, "flanneld reads as a lease of "+tc.sn)
	}
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.8.0-24": false, prefix + "/subnets/10.244.9.0-24": false})
}
