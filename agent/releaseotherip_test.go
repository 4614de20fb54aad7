package agent

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestOtherIPLeases: which lease at another public IP than the flags'
// --release-lease takes for this host's, so that it refuses rather than
// say "no lease of this host to release" and leave it live until its TTL:
// subnet.env's subnet with this host's identity (the state dir's or
// subnet.env's) first, else any lease with the state dir's identity, as
// without subnet.env (gone after a reboot). Before, without subnet.env
// none was (the "no subnet.env" cases). A lease at the flags' public IP,
// one without an identity, or one of another identity is none.
func TestOtherIPLeases(t *testing.T) {
	const me, env, other = "aaaa", "bbbb", "cccc"
	pub := netip.MustParseAddr("198.19.9.1")
	lease := func(sn, ip, id string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix(sn), LeaseID: 7,
			Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(ip), BackendType: "vxlan", HostID: id}}
	}
	agents := lease("10.244.5.0/24", "198.18.0.1", me)
	renumbered := lease("10.244.9.0/24", "198.18.0.7", me)
	for _, tc := range []struct {
		name   string
		leases []subnet.Lease
		prev   string // subnet.env's subnet, "" for none
		byEnv  string // the subnet of byEnv, "" for nil
		byID   []string
	}{
		{name: "no subnet.env, our identity at the agent's public IP", leases: []subnet.Lease{agents}, byID: []string{"10.244.5.0/24"}},
		{name: "no subnet.env, our identity at two public IPs", leases: []subnet.Lease{agents, renumbered}, byID: []string{"10.244.5.0/24", "10.244.9.0/24"}},
		{name: "no subnet.env, the lease gone", leases: []subnet.Lease{lease("10.244.6.0/24", "198.18.0.2", other)}},
		{name: "no subnet.env, no leases at all"},
		{name: "no subnet.env, another identity at another public IP", leases: []subnet.Lease{lease("10.244.5.0/24", "198.18.0.1", other)}},
		{name: "no subnet.env, no identity (flanneld's lease)", leases: []subnet.Lease{lease("10.244.5.0/24", "198.18.0.1", "")}},
		{name: "no subnet.env, our identity at the flags' public IP", leases: []subnet.Lease{lease("10.244.5.0/24", "198.19.9.1", me)}},
		{name: "subnet.env's subnet with our identity", leases: []subnet.Lease{renumbered, agents}, prev: "10.244.5.0/24", byEnv: "10.244.5.0/24"},
		{name: "subnet.env's subnet with subnet.env's identity", leases: []subnet.Lease{lease("10.244.5.0/24", "198.18.0.1", env)}, prev: "10.244.5.0/24", byEnv: "10.244.5.0/24"},
		{name: "subnet.env's subnet of another identity, ours elsewhere", leases: []subnet.Lease{lease("10.244.5.0/24", "198.18.0.1", other), renumbered}, prev: "10.244.5.0/24", byID: []string{"10.244.9.0/24"}},
		{name: "subnet.env's identity on another subnet", leases: []subnet.Lease{lease("10.244.9.0/24", "198.18.0.1", env)}, prev: "10.244.5.0/24"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var prev netip.Prefix
			if tc.prev != "" {
				prev = netip.MustParsePrefix(tc.prev)
			}
			byEnv, byID := otherIPLeases(tc.leases, pub, prev, me, env)
			var gotEnv string
			if byEnv != nil {
				gotEnv = byEnv.Subnet.String()
			}
			var gotID []string
			for _, l := range byID {
				gotID = append(gotID, l.Subnet.String())
			}
			if gotEnv != tc.byEnv || !slices.Equal(gotID, tc.byID) {
				t.Errorf("otherIPLeases = %q, %q; want %q, %q", gotEnv, gotID, tc.byEnv, tc.byID)
			}
		})
	}
}
