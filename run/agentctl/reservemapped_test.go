package main

import (
	"strings"
	"testing"
)

// TestReservePublicIPv4Mapped: lease reserve takes --public-ip as agentd
// takes its own --public-ip: an IPv4-mapped IPv6 address
// (::ffff:198.18.0.9) is the IPv4 address it holds, and the reservation
// names that, which the agent given either spelling takes. Before,
// reserve refused it (`--public-ip "::ffff:198.18.0.9" is not an IPv4
// address`, 64) while agentd ran with it; other IPv6 addresses are still
// refused.
func TestReservePublicIPv4Mapped(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.wantFail(64, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "fd00::9"}, `--public-ip "fd00::9" is not an IPv4 address`)
	c.wantFail(64, []string{"lease", "reserve", "10.244.7.0/24", "--public-ip", "::ffff:127.0.0.1"}, "--public-ip 127.0.0.1: no host can be reached at")
	if out := c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "::ffff:198.18.0.9"); !strings.Contains(out, "reserved 10.244.7.0/24 for 198.18.0.9") {
		t.Errorf("reserve said %q", out)
	}
	if v, _, _ := c.get(prefix + "/subnets/10.244.7.0-24"); !strings.Contains(v, `"PublicIP":"198.18.0.9"`) {
		t.Errorf("reservation %s, want it for 198.18.0.9", v)
	}
}
