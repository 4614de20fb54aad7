package subnet_test

import (
	"fmt"
	"net/netip"
	"testing"
)

// TestFlanneldOnlyKeyHoldsAsFlanneldReadsItsValue: a key only flanneld's
// key pattern reads ("10.244.5.0-024") holds its subnet as flanneld reads
// its value. flanneld v0.28.10 decodes each value into its LeaseAttrs and
// skips the key when that fails ("Ignoring bad subnet node" in getSubnets,
// a malformed event in its watch): it neither routes the subnet nor leases
// around it, so neither does agentd. Values agentd cannot use but flanneld
// decodes ({} is a lease of 0.0.0.0 to it, a HostID that is no string is
// ignored) hold the subnet. A key naming this host's public IP and no other
// host's identity is this host's to flanneld (its hosts route the subnet
// here), and does not hold it either. Before, any value held the subnet.
func TestFlanneldOnlyKeyHoldsAsFlanneldReadsItsValue(t *testing.T) {
	t.Parallel()
	prev := netip.MustParsePrefix("10.244.5.0/24")
	for _, tc := range []struct {
		name, value string
		held        bool
	}{
		{"not JSON", `{"PublicIP":`, false},
		{"PublicIP null", `{"PublicIP":null,"BackendType":"vxlan"}`, false},
		{"PublicIP not an address", `{"PublicIP":"198.18.0.300"}`, false},
		{"PublicIPv6 empty, which agentd takes as none", `{"PublicIP":"198.18.0.9","PublicIPv6":""}`, false},
		{"BackendType not a string", `{"PublicIP":"198.18.0.9","BackendType":1}`, false},
		{"our public IP", `{"PublicIP":"198.18.0.1","BackendType":"vxlan"}`, false},
		{"our public IP and identity", fmt.Sprintf(`{"PublicIP":"198.18.0.1","HostID":%q}`, hostID(1)), false},
		{"our public IP, another host's identity", fmt.Sprintf(`{"PublicIP":"198.18.0.1","HostID":%q}`, hostID(2)), true},
		{"another host", flanneldValue, true},
		{"HostID not a string", `{"PublicIP":"198.18.0.9","HostID":7}`, true},
		{"no PublicIP", `{}`, true},
		{"null", `null`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, net16)
			e.putKeys(t, map[string]string{"10.244.5.0-024": tc.value})
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev.String())))
			if tc.held && l.Subnet.Overlaps(prev) {
				t.Fatalf("leased %s although flanneld reads 10.244.5.0-024 = %s as another host's lease of it", l.Subnet, tc.value)
			}
			if !tc.held && l.Subnet != prev {
				t.Fatalf("leased %s, not the previous %s, which 10.244.5.0-024 = %s does not hold to flanneld", l.Subnet, prev, tc.value)
			}
		})
	}
}
