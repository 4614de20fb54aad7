package subnet_test

import (
	"net/netip"
	"testing"
)

// TestLeaseKeyHoldsAsFlanneldReadsItsValue: a lease key as agentd writes
// them whose value agentd cannot use holds subnets as flanneld reads the
// value, in Acquire as in the recreation of a lost key
// (TestOwnKeyRecreatedOnlyIfNoOtherHostOverlaps). flanneld v0.28.10 skips a
// value its decoder refuses ("Ignoring bad subnet node"): no host routes
// the key, and it holds only its own subnet (its key cannot be created
// over), not one inside or around it. A value only flanneld decodes
// ({"PublicIP":…,"HostID":7}, {}) is a lease to flanneld hosts, which route
// the key's subnet to its PublicIP: it holds every subnet overlapping it,
// unless it names this host's public IP. Before, any such key held every
// subnet it overlaps in Acquire, while the recreation of a lost key
// skipped them all.
func TestLeaseKeyHoldsAsFlanneldReadsItsValue(t *testing.T) {
	t.Parallel()
	prev := netip.MustParsePrefix("10.244.5.0/24")
	for _, tc := range []struct {
		name, key, value string
		held             bool
	}{
		{"wider, value nobody reads", "10.244.4.0-23", `{"PublicIP":`, false},
		{"narrower, value nobody reads", "10.244.5.128-25", `{"PublicIP":null}`, false},
		{"the same key, value nobody reads", "10.244.5.0-24", `{"PublicIP":`, true},
		{"wider, value only flanneld reads", "10.244.4.0-23", `{"PublicIP":"198.18.0.9","HostID":7}`, true},
		{"wider, no PublicIP, which flanneld reads as 0.0.0.0", "10.244.4.0-23", `{}`, true},
		{"wider, value only flanneld reads, our public IP", "10.244.4.0-23", `{"PublicIP":"198.18.0.1","HostID":7}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, net16)
			e.putKeys(t, map[string]string{tc.key: tc.value})
			l := acquire(t, e.manager("198.18.0.1", hostID(1), pinned(prev.String())))
			if tc.held && l.Subnet.Overlaps(prev) {
				t.Fatalf("leased %s although %s = %s holds it", l.Subnet, tc.key, tc.value)
			}
			if !tc.held && l.Subnet != prev {
				t.Fatalf("leased %s, not the previous %s, which %s = %s does not hold", l.Subnet, prev, tc.key, tc.value)
			}
		})
	}
}
