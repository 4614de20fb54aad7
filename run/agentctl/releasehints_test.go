package main

import (
	"context"
	"strings"
	"testing"
)

// TestHintsNameDualStackKey: lease reserve's note about the host's live
// lease, and its refusals pointing at lease release, named the bare IPv4
// subnet of a dual-stack key (left from before EnableIPv6 was turned
// off): next to the host's plain key of that subnet, the command given
// names two keys and is refused. They name the key as leases shows it,
// quoted for the shell.
func TestHintsNameDualStackKey(t *testing.T) {
	c := newCtl(t)
	c.putConfig(`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/48"}`)
	c.hostKey("10.244.5.0/24", "fd00:10:244:5::/64", "198.18.0.1", "", true)
	c.hostKey("10.244.6.0/24", "fd00:10:244:6::/64", "198.18.0.2", "", false)
	c.putConfig(`{"Network":"10.244.0.0/16"}`)
	c.hostKey("10.244.5.0/24", "", "198.18.0.3", "", true)
	c.hostKey("10.244.6.0/24", "", "198.18.0.4", "", false)

	out := c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.1")
	if !strings.Contains(out, "198.18.0.1 still holds the live lease 10.244.5.0/24&fd00:10:244:5::/64; it moves to 10.244.7.0/24") {
		t.Errorf("reserve note: %q", out)
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.8.0/24", "--public-ip", "198.18.0.2"},
		"198.18.0.2 already has the reservation 10.244.6.0/24&fd00:10:244:6::/64",
		"(agentctl lease release '10.244.6.0/24&fd00:10:244:6::/64')")
	// The command the hint gives releases that reservation alone.
	c.mustRun("lease", "release", "10.244.6.0/24&fd00:10:244:6::/64")
	c.wantKeys(map[string]bool{
		prefix + "/subnets/10.244.6.0-24&fd00:10:244:6::-64": false,
		prefix + "/subnets/10.244.6.0-24":                    true,
	})

	if _, err := c.cli.Put(context.Background(), prefix+"/subnets/10.244.9.0-24&fd00:10:244:9::-64", `{"PublicIP":`); err != nil {
		t.Fatal(err)
	}
	c.wantFail(1, []string{"lease", "reserve", "10.244.9.0/24", "--public-ip", "198.18.0.5"},
		"whose value is not a lease", "(agentctl lease release '10.244.9.0/24&fd00:10:244:9::/64')")
}
