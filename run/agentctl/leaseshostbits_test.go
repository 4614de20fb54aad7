package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestKeyWithHostBitsSaysFlanneldCannotRouteIt: a key with host bits set
// ("10.244.5.7-24", beside <prefix>/subnets/ too) is a lease of
// 10.244.5.7/24 to flanneld v0.28.10, which does not mask it: its hosts
// lease around 10.244.5.0/24 and its udp hosts route that to the key's
// PublicIP, but the kernel refuses the route to vxlan and host-gw hosts
// (vxlan ones retry for about 50 s, then delete the FDB entry of the
// value's VtepMAC and PublicIP). leases and reserve say so (the JSON too:
// flanneldHostBits), and still hold the subnet; a key without host bits
// ("10.244.6.0-024") keeps its words. Before, both said flanneld hosts route
// 10.244.5.0/24 to the key's PublicIP, which vxlan and host-gw hosts never
// do.
func TestKeyWithHostBitsSaysFlanneldCannotRouteIt(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	ctx := context.Background()
	const value = `{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}`
	hostBits := []string{prefix + "/subnets/10.244.5.7-24", prefix + "/subnets-old/10.244.7.9-24"}
	plain := prefix + "/subnets/10.244.6.0-024"
	for _, k := range append(hostBits, plain) {
		if _, err := c.cli.Put(ctx, k, value); err != nil {
			t.Fatal(err)
		}
	}
	out := c.mustRun("leases")
	for _, k := range hostBits {
		if !strings.Contains(out, "invalid: "+k+": ") || !strings.Contains(out, " ("+subnet.FlanneldHostBits+")\n") {
			t.Errorf("leases does not say flanneld keeps the host bits of %s:\n%s", k, out)
		}
	}
	if !strings.Contains(out, "invalid: "+plain+": ") || strings.Count(out, subnet.FlanneldHostBits) != len(hostBits) {
		t.Errorf("leases says %s has host bits set, or lists it not:\n%s", plain, out)
	}
	var doc struct {
		Invalid []struct {
			Key              string `json:"key"`
			FlanneldLeaseOf  string `json:"flanneldLeaseOf"`
			FlanneldHostBits bool   `json:"flanneldHostBits"`
		} `json:"invalid"`
	}
	if err := json.Unmarshal([]byte(c.mustRun("leases", "-o", "json")), &doc); err != nil {
		t.Fatal(err)
	}
	for _, r := range doc.Invalid {
		if want := r.Key != plain; r.FlanneldHostBits != want || r.FlanneldLeaseOf == "" {
			t.Errorf("%s: flanneldLeaseOf %q, flanneldHostBits %v, want %v", r.Key, r.FlanneldLeaseOf, r.FlanneldHostBits, want)
		}
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.5.0/24", "--public-ip", "198.18.0.3"},
		"10.244.5.0/24 is held by "+hostBits[0], "flanneld reads as a lease of 10.244.5.0/24 ("+subnet.FlanneldHostBits+")")
	c.wantFail(1, []string{"lease", "reserve", "10.244.6.0/24", "--public-ip", "198.18.0.3"},
		"flanneld reads as a lease of 10.244.6.0/24 (its hosts route that to the key's PublicIP 198.18.0.2)")
}
