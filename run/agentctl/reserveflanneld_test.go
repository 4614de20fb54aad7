package main

import (
	"context"
	"strings"
	"testing"
)

// TestReserveRefusesKeyFlanneldReads: a key under <prefix>/subnets/ that
// agents skip (not spelt as they write keys) but flanneld reads as a lease
// ("10.244.5.0-024", "old/10.244.7.128-25") holds its subnet: flanneld hosts
// route it to the key's PublicIP, and agents lease around it since 38b4c86.
// lease reserve refuses that subnet, or one overlapping it, naming the key
// and the command that deletes it (its whole key, which release takes for
// any name). Before, the reservation was written, and the agent that takes
// it shares the subnet with the key's host in flanneld's routes.
func TestReserveRefusesKeyFlanneldReads(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	for _, k := range []string{"10.244.5.0-024", "old/10.244.7.128-25"} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, `{"PublicIP":"198.18.0.2"}`); err != nil {
			t.Fatal(err)
		}
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9"},
		"10.244.5.0/24 is held by "+prefix+"/subnets/10.244.5.0-024, a key agents skip but flanneld reads as a lease of 10.244.5.0/24",
		"(agentctl lease release "+prefix+"/subnets/10.244.5.0-024)")
	c.wantFail(1, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.9"},
		"10.244.7.0/24 overlaps "+prefix+"/subnets/old/10.244.7.128-25", "flanneld reads as a lease of 10.244.7.128/25")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": false, prefix + "/subnets/10.244.7.0-24": false})

	// The command given frees it, and the reservation is then written.
	out := c.mustRun("lease", "release", prefix+"/subnets/10.244.5.0-024")
	if !strings.Contains(out, "released 10.244.5.0-024") {
		t.Errorf("release: %q", out)
	}
	c.mustRun("lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": true})
}
