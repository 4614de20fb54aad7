package main

import (
	"context"
	"strings"
	"testing"
)

// TestReleaseBesideJudgesValueAsFlanneld: release takes a key beside
// <prefix>/subnets/ only when flanneld reads it as a lease, its value
// included, as leases lists it: a value flanneld's decoder skips (not JSON,
// "PublicIPv6":"", which agents would take as none) makes the key no lease
// to flanneld or agents (a file an operator kept there), and release
// refuses it and keeps it; {} is a lease of 0.0.0.0 to flanneld, listed and
// released. Before, release went by the key's pattern alone and deleted
// all three.
func TestReleaseBesideJudgesValueAsFlanneld(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	skipped := map[string]string{
		prefix + "/subnets-old/10.244.5.0-24": `{"PublicIP":`,
		prefix + "/subnets-old/10.244.6.0-24": `{"PublicIP":"198.18.0.2","PublicIPv6":""}`,
	}
	read := prefix + "/subnets.bak/10.244.7.0-24"
	for k, v := range skipped {
		if _, err := c.cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.cli.Put(ctx, read, `{}`); err != nil {
		t.Fatal(err)
	}
	listed := c.mustRun("leases")
	if !strings.Contains(listed, "invalid: "+read+": ") {
		t.Errorf("leases does not list %s, a lease to flanneld:\n%s", read, listed)
	}
	for k := range skipped {
		if strings.Contains(listed, k) {
			t.Errorf("leases lists %s, which flanneld skips:\n%s", k, listed)
		}
		c.wantFail(1, []string{"lease", "release", k}, k, "flanneld skips its value", "no lease to flanneld or agents")
	}
	out := c.mustRun("lease", "release", read)
	if !strings.Contains(out, "released "+read+" (a key beside "+prefix+"/subnets/, which flanneld reads as a lease of 10.244.7.0/24)") {
		t.Errorf("release %s: %q", read, out)
	}
	c.wantKeys(map[string]bool{read: false, prefix + "/subnets-old/10.244.5.0-24": true, prefix + "/subnets-old/10.244.6.0-24": true})
}
