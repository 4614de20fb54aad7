package main

import (
	"context"
	"strings"
	"testing"
)

// TestReserveJudgesLeaseKeyValueAsFlanneldDoes: a lease key as agents write
// them whose value agents cannot use holds subnets in lease reserve as in
// Acquire: a value flanneld skips too holds only the key's own subnet (its
// key cannot be written over), not one around it; a value flanneld decodes
// ({"PublicIP":…,"HostID":7}) is a lease to flanneld hosts, which route the
// key's subnet to its PublicIP, and holds every subnet overlapping it;
// agentctl leases says so. Before, reserve refused any subnet overlapping
// such a key, whatever its value.
func TestReserveJudgesLeaseKeyValueAsFlanneldDoes(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	for k, v := range map[string]string{
		"10.244.4.0-23": `{"PublicIP":`,
		"10.244.6.0-23": `{"PublicIP":"198.18.0.2","HostID":7}`,
		"10.244.9.0-24": `{"PublicIP":`,
	} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	// leases says how flanneld reads it.
	if out := c.mustRun("leases"); !strings.Contains(out, "invalid: "+prefix+"/subnets/10.244.6.0-23: lease value: ") ||
		!strings.Contains(out, "flanneld reads it as a lease of 10.244.6.0/23") || strings.Contains(out, "flanneld reads it as a lease of 10.244.4.0/23") {
		t.Errorf("leases does not say that flanneld reads 10.244.6.0-23 alone as a lease:\n%s", out)
	}
	c.mustRun("lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9")
	c.wantFail(1, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.8"},
		"10.244.7.0/24 overlaps "+prefix+"/subnets/10.244.6.0-23", "flanneld reads as a lease of 10.244.6.0/23 (its hosts route that to the key's PublicIP 198.18.0.2)",
		"(agentctl lease release 10.244.6.0/23)")
	c.wantFail(1, []string{"lease", "reserve", "10.244.9.0/24", "--public-ip", "198.18.0.8"},
		"10.244.9.0/24 is held by "+prefix+"/subnets/10.244.9.0-24, whose value is not a lease")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": true, prefix + "/subnets/10.244.7.0-24": false})
}
