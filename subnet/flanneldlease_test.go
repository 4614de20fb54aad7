package subnet_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestFlanneldReadableKeyHoldsSubnet: flanneld reads more keys under
// <prefix>/subnets/ as leases than agentd does (FlanneldSubnetKey: its
// pattern is not anchored at the start, takes leading zeros in the length,
// host bits, any spelling of the IPv6 address), and its hosts route the
// subnet such a key names to the key's PublicIP. agentd skips the key as a
// peer, but must not lease that subnet itself: two hosts would hold it.
// Before, the allocator passed over such keys and took 10.244.5.0/24 (or the
// IPv6 subnet) under them. Keys flanneld skips too (a leading zero in an
// octet, text after the length) leave the subnet free.
func TestFlanneldReadableKeyHoldsSubnet(t *testing.T) {
	t.Parallel()
	const dual = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`
	prev4 := netip.MustParsePrefix("10.244.5.0/24")
	prev6 := netip.MustParsePrefix("fc00:0:0:5::/64")
	for _, tc := range []struct {
		name, config, key string
		held              bool
	}{
		{"leading zero in the length", net16, "10.244.5.0-024", true},
		{"junk before the address", net16, "x10.244.5.0-24", true},
		{"another path segment", net16, "old/10.244.5.0-24", true},
		{"host bits set", net16, "10.244.5.7-24", true},
		{"a /23 with host bits", net16, "10.244.4.9-23", true},
		{"IPv6 half spelled otherwise", dual, "10.244.200.0-24&fc00:0000:0:0005::-64", true},
		{"leading zero in an octet", net16, "10.244.05.0-24", false},
		{"text after the length", net16, "10.244.5.0-24x", false},
		{"a /32 flanneld refuses", net16, "10.244.5.0-032", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.config)
			e.putKeys(t, map[string]string{tc.key: flanneldValue})
			log, lines := captureLog()
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev4.String()), func(c *subnet.ManagerConfig) { c.Logger = log }))
			got := l.Subnet
			want := prev4
			if tc.config == dual {
				got, want = l.IPv6Subnet, prev6
			}
			if !tc.held {
				if got != want {
					t.Fatalf("key %q is no lease to flanneld either, yet %s was passed over for %s", tc.key, want, got)
				}
				return
			}
			if got.Overlaps(want) {
				t.Fatalf("leased %s (key %s) although flanneld reads %q as a lease of %s", got, l.Key(), tc.key, want)
			}
			if tc.config == dual {
				return // the IPv4 subnet was free: no move to say
			}
			for _, line := range lines() {
				if strings.Contains(line, "MOVING TO ANOTHER SUBNET") && strings.Contains(line, prefix+"/subnets/"+tc.key+`"`) &&
					strings.Contains(line, "flanneld reads as a lease") {
					return
				}
			}
			t.Errorf("moved to %s, but no MOVING TO ANOTHER SUBNET line names the key %q as flanneld's lease; log:\n%s", got, tc.key, strings.Join(lines(), "\n"))
		})
	}
}
