package main

import "testing"

// TestReserveRefusesOverlap: after SubnetLen changed, leases of the old
// length stay (they are still routed); a reservation of the new length
// inside one of them, or one of a length containing one, would send the
// same addresses to two hosts, and is refused naming the lease it overlaps.
// A subnet beside them is reserved.
func TestReserveRefusesOverlap(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "24")
	c.liveLease("10.244.2.0/23", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.wantFail(1, []string{"lease", "reserve", "10.244.3.0/24", "--public-ip", "198.18.0.2"},
		"10.244.3.0/24 overlaps 10.244.2.0/23, leased to 198.18.0.1", "10.244.2.0-23")
	c.liveLease("10.244.8.0/25", "198.18.0.3", "aa:bb:cc:dd:ee:03")
	c.wantFail(1, []string{"lease", "reserve", "10.244.8.0/24", "--public-ip", "198.18.0.2"},
		"10.244.8.0/24 overlaps 10.244.8.0/25, leased to 198.18.0.3", "10.244.8.0-25")
	c.mustRun("lease", "reserve", "10.244.4.0/24", "--public-ip", "198.18.0.2")
	if _, _, ok := c.get(prefix + "/subnets/10.244.4.0-24"); !ok {
		t.Error("the reservation beside the other leases was not written")
	}
	for _, key := range []string{"10.244.3.0-24", "10.244.8.0-24"} {
		if _, _, ok := c.get(prefix + "/subnets/" + key); ok {
			t.Errorf("refused reservation %s was written", key)
		}
	}
}
