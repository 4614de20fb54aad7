package main

import (
	"context"
	"strings"
	"testing"
)

// TestConfigInitSeesKeysFlanneldReads: config init judges the keys flanneld
// reads as leases as it judges leases, beside <prefix>/subnets/ as under it
// (<prefix>/subnets-old/10.244.5.0-24, a copy kept by hand;
// 10.244.6.0-024): a Network that no longer holds their subnets is
// refused, and so is a VNI change while one exists; and its write holds
// only while no key beside <prefix>/subnets/ changed since its check, as
// under it. Before, it read the agents' leases alone, saw none, and wrote
// both configs; and a key flanneld reads written beside <prefix>/subnets/
// between the check and the write did not stop the write.
func TestConfigInitSeesKeysFlanneldReads(t *testing.T) {
	const value = `{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}`
	ctx := context.Background()
	for _, key := range []string{prefix + "/subnets-old/10.244.5.0-24", prefix + "/subnets/10.244.6.0-024"} {
		t.Run(strings.TrimPrefix(key, prefix+"/"), func(t *testing.T) {
			c := newCtl(t)
			c.mustRun("config", "init", "--network", "10.244.0.0/16")
			if _, err := c.cli.Put(ctx, key, value); err != nil {
				t.Fatal(err)
			}
			c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"},
				"invalidate 1 lease(s) or reservation(s)", key, "flanneld reads it as a lease of 198.18.0.2", "outside the network 10.245.0.0/16", "--force")
			c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--vni", "2"},
				"changes Backend.VNI 1 → 2 while 1 lease(s) or reservation(s) exist")
			if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, `"10.244.0.0/16"`) || strings.Contains(v, "VNI") {
				t.Fatalf("config written over a key flanneld reads as a lease: %s", v)
			}
		})
	}
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	key := prefix + "/subnets-old/10.244.5.0-24"
	c.beforeFirstTxn(func() {
		if _, err := c.cli.Put(ctx, key, value); err != nil {
			t.Fatal(err)
		}
	})
	c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"}, "changed while this command ran", "nothing written", "run it again")
	if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, `"10.244.0.0/16"`) {
		t.Fatalf("config written although %s was written after the check: %s", key, v)
	}
}
