package main

import "testing"

// TestReserveRefusesPublicIPNoAgentTakes: a reservation is taken by the
// agent whose public IP it names, and agentd refuses at start a public IP
// that is unspecified, loopback, multicast, the broadcast address or inside
// the cluster Network. A reservation for such an address would never be
// taken, and every peer would list it as not programmed for good; it is
// refused as a usage error (64), and nothing is written. Before, agentctl
// reserved 10.244.63.0/24 for 0.0.0.0 and 10.244.61.0/24 for 10.244.3.3
// (seen on the namespace cluster).
func TestReserveRefusesPublicIPNoAgentTakes(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	for _, tc := range []struct{ ip, want string }{
		{"0.0.0.0", "--public-ip 0.0.0.0: no host can be reached at an unspecified, loopback, multicast or broadcast address"},
		{"127.0.0.1", "--public-ip 127.0.0.1: no host can be reached at"},
		{"224.0.0.5", "--public-ip 224.0.0.5: no host can be reached at"},
		{"255.255.255.255", "--public-ip 255.255.255.255: no host can be reached at"},
		{"10.244.3.3", "--public-ip 10.244.3.3 is inside the cluster Network 10.244.0.0/16"},
	} {
		c.wantFail(64, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", tc.ip}, tc.want, "no agentd takes this reservation")
	}
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.7.0-24": false})
	c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.9")
	c.wantKeys(map[string]bool{prefix + "/subnets/10.244.7.0-24": true})
}
