package main

import (
	"context"
	"strings"
	"testing"
)

// TestKeyFlanneldSkipsHoldsNoSubnet: a key only flanneld's key pattern
// reads ("10.244.5.0-024") whose value flanneld's decoder refuses is
// skipped by flanneld ("Ignoring bad subnet node"): no flanneld host routes
// or leases around it, and agents lease its subnet since it holds nothing.
// lease reserve takes the subnet too, and leases does not say flanneld reads
// the key. A value flanneld decodes though agents cannot ({}, a lease of
// 0.0.0.0 to flanneld) still holds it. Before, any value held the subnet.
func TestKeyFlanneldSkipsHoldsNoSubnet(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	for k, v := range map[string]string{
		"10.244.5.0-024": `{"PublicIP":"198.18.0.2","PublicIPv6":""}`,
		"10.244.6.0-024": `{"PublicIP":`,
		"10.244.7.0-024": `{}`,
	} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	out := c.mustRun("leases")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "flanneld") != strings.HasPrefix(l, "invalid: "+prefix+"/subnets/10.244.7.0-024:") {
			t.Errorf("line %q: only the key of {} is flanneld's lease", l)
		}
	}
	c.mustRun("lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9")
	c.mustRun("lease", "reserve", "10.244.6.0/24", "--public-ip", "198.18.0.8")
	c.wantFail(1, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.7"},
		"flanneld reads as a lease of 10.244.7.0/24 (its hosts route that to the key's PublicIP 0.0.0.0)")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": true, prefix + "/subnets/10.244.6.0-24": true, prefix + "/subnets/10.244.7.0-24": false})
}

// TestKeyBesideSubnetsFlanneldReads: flanneld v0.28.10 lists
// <prefix>/subnets with no slash after it, so a key such as
// <prefix>/subnets-old/10.244.5.0-24 is a lease to it, routed to its
// PublicIP. leases lists it as a key agents skip, saying so, and lease
// reserve refuses its subnet, naming the etcdctl command that deletes it
// (release takes keys under <prefix>/subnets/ only). Keys there that
// flanneld does not read are not listed, as before. Before, neither command
// read beside <prefix>/subnets/.
func TestKeyBesideSubnetsFlanneldReads(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	for k, v := range map[string]string{
		prefix + "/subnets-old/10.244.5.0-24":  `{"PublicIP":"198.18.0.2"}`,
		prefix + "/subnets-old/10.244.6.0-24":  `{"PublicIP":`,
		prefix + "/subnets-old/10.244.07.0-24": `{"PublicIP":"198.18.0.2"}`,
		prefix + "/subnetsX10.244.8.0-24":      `{"PublicIP":"198.18.0.3"}`,
		prefix + "/subnetz/10.244.9.0-24":      `{"PublicIP":"198.18.0.2"}`,
	} {
		if _, err := c.cli.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	out := c.mustRun("leases")
	for _, want := range []string{
		"invalid: " + prefix + "/subnets-old/10.244.5.0-24: not a subnet key: not under " + prefix + "/subnets/; flanneld reads it as a lease of 10.244.5.0/24 ",
		"invalid: " + prefix + "/subnetsX10.244.8.0-24: not a subnet key: not under " + prefix + "/subnets/; flanneld reads it as a lease of 10.244.8.0/24 ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("leases does not say %q:\n%s", want, out)
		}
	}
	for _, not := range []string{"10.244.6.0-24", "10.244.07.0-24", "subnetz"} {
		if strings.Contains(out, not) {
			t.Errorf("leases lists %s, which flanneld does not read:\n%s", not, out)
		}
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.9"},
		"10.244.5.0/24 is held by "+prefix+"/subnets-old/10.244.5.0-24, a key agents skip but flanneld reads as a lease of 10.244.5.0/24",
		"(agentctl lease release "+prefix+"/subnets-old/10.244.5.0-24)")
	c.mustRun("lease", "reserve", "10.244.6.0/24", "--public-ip", "198.18.0.8")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.5.0-24": false, prefix + "/subnets/10.244.6.0-24": true})
}
