package main

import (
	"encoding/json"
	"testing"
)

// TestConfigInitUDPRestoreOverFlanneldUDP: a udp config written back over
// a forced Backend.Type stays refused without --force while a lease says
// no type, as flanneld's udp leases do, even when every other lease shows
// udp restored: a flanneld udp host sends every peer to the Port of the
// config it started with, which neither its lease nor the stored config
// (the forced type's) says. Two clusters of flanneld udp hosts, one started
// on Port 8285 and one on 9000, hold the same keys after the forced change,
// so no rule can write `--backend udp` (8285) to the first and refuse it to
// the second, whose hosts it would cut off from every host restarted on
// it. The refusal says so, where it said that "running agents keep the old
// settings" although they run what is written back.
func TestConfigInitUDPRestoreOverFlanneldUDP(t *testing.T) {
	udpInit := func(args ...string) []string {
		return append([]string{"config", "init", "--network", "10.244.0.0/16", "--backend", "udp"}, args...)
	}
	vxlanForced := []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "vxlan", "--force"}
	keys := map[string]string{}
	for _, port := range []string{"8285", "9000"} {
		c := newCtl(t)
		c.mustRun(udpInit("--port", port)...)
		c.typedLease("10.244.6.0/24", "198.18.0.2", "") // flanneld's udp, on port
		c.mustRun(vxlanForced...)
		for _, k := range []string{prefix + "/config", prefix + "/subnets/10.244.6.0-24"} {
			v, _, _ := c.get(k)
			if keys[k] == "" {
				keys[k] = v
			} else if keys[k] != v {
				t.Fatalf("%s differs between the clusters: %s and %s", k, keys[k], v)
			}
		}
		c.wantFail(1, udpInit(), "changes Backend.Type vxlan → udp while 1 lease(s)",
			"of which 1 say no backend type, as flanneld's udp leases do: 10.244.6.0-24 (198.18.0.2)",
			"the Port of the config it started with, which neither its lease nor the stored config (vxlan) says",
			"if 8285 is that port, use --force")
		if v, _, _ := c.get(prefix + "/config"); v != keys[prefix+"/config"] {
			t.Errorf("config written past a flanneld udp lease: %s", v)
		}
	}

	// Beside agentd's udp leases, which show udp restored, the refusal
	// names only the leases that say no type.
	c := newCtl(t)
	c.mustRun(udpInit()...)
	c.udpLease("10.244.5.0/24", "198.18.0.1", json.RawMessage(`{"Port":8285}`))
	c.typedLease("10.244.6.0/24", "198.18.0.2", "")
	c.mustRun(vxlanForced...)
	c.wantFail(1, udpInit(), "while 2 lease(s)", "of which 1 say no backend type, as flanneld's udp leases do: 10.244.6.0-24 (198.18.0.2);")
	c.mustRun(udpInit("--force")...)

	// A host restarted on the forced type is refused as before.
	c.mustRun(vxlanForced...)
	c.vxlanLease("10.244.7.0/24", "198.18.0.3", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:03","Port":8472}`)
	c.wantFail(1, udpInit(), "10.244.7.0-24 (198.18.0.3): backend vxlan, the new config says udp", "--force")
}
