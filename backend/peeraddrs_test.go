package backend_test

import (
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestPeerAddrsConcerns: an address event concerns the stored peers when
// it is about an IPv4 address that is a peer's public IP or lies in a
// peer's subnet, added or deleted, on any link; nothing concerns them
// before a Store.
func TestPeerAddrsConcerns(t *testing.T) {
	ev := func(p string, added bool) netlink.AddrUpdate {
		n := backend.IPNet(netip.MustParsePrefix(p)) // IPv4 in 4 bytes, as the kernel reports it
		return netlink.AddrUpdate{LinkAddress: *n, LinkIndex: 7, NewAddr: added}
	}
	var a backend.PeerAddrs
	if a.Concerns(ev("10.244.2.1/24", true)) {
		t.Error("an event concerns peers before any were stored")
	}
	peers := []subnet.Lease{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.2")}},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.19.0.3")}},
		{Subnet: netip.MustParsePrefix("10.244.4.0/25"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("fd00::4")}},
	}
	a.Store(peers)
	for p, want := range map[string]bool{
		"10.244.2.1/24":         true,  // a peer's subnet (cni0 left with it)
		"10.244.3.0/32":         true,  // a peer's gateway in vxlan
		"10.244.4.127/32":       true,  // another subnet length
		"198.18.0.2/24":         true,  // a peer's public IP
		"198.19.0.3/32":         true,  // another peer's
		"10.244.4.128/32":       false, // outside every peer's subnet
		"10.244.1.1/24":         false, // our own subnet (cni0 given our gateway)
		"192.0.2.1/24":          false, // another network
		"198.18.0.3/24":         false, // no peer's public IP
		"fd00::4/64":            false, // IPv6, even a peer's
		"fe80::1/64":            false, // the kernel's link-local churn
		"::ffff:10.244.2.1/128": false, // IPv6, whatever it looks like
	} {
		for _, added := range []bool{true, false} {
			if got := a.Concerns(ev(p, added)); got != want {
				t.Errorf("an event about %s (added %v) concerns the peers: %v, want %v", p, added, got, want)
			}
		}
	}
	if u := (netlink.AddrUpdate{LinkAddress: net.IPNet{}}); a.Concerns(u) {
		t.Error("an event with no address concerns the peers")
	}
	a.Store(peers[1:])
	if a.Concerns(ev("10.244.2.1/24", false)) {
		t.Error("an event about a peer gone since the last Store concerns the peers")
	}
}
