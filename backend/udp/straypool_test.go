package udp

import (
	"net/netip"
	"testing"
)

// TestStraysOnlyInLeasePool: an address of this host in the network but
// outside the leases' range (SubnetMin to SubnetMax) takes nothing from any
// host and is not named a stray; one in the range is. Before, udp's tests
// ran its shadow check with no range set, the whole network leasable, so
// that the pass could leave the range out of it with no test failing (as
// host-gw's TestStraysOnlyInLeasePool).
func TestStraysOnlyInLeasePool(t *testing.T) {
	h := newTestNet(t)
	h.cfg.Network.SubnetMin = netip.MustParseAddr("10.244.10.0")
	h.cfg.Network.SubnetMax = netip.MustParseAddr("10.244.20.0")
	h.own = lease("10.244.11.0/24", "198.18.0.1", Type)
	h.start()
	h.host.AddVeth(t, "nic1", "nic1p", netip.MustParsePrefix("10.244.2.5/24"))        // below SubnetMin
	h.host.AddVeth(t, "nic2", "nic2p", netip.MustParsePrefix("10.244.21.5/24"))       // above SubnetMax
	h.host.AddVeth(t, "docker0", "docker0p", netip.MustParsePrefix("10.244.15.1/24")) // in the range
	res := h.reconcile(lease("10.244.12.0/24", "198.18.0.2", Type))
	if res.Found == nil || len(res.Found.Strays) != 1 || res.Found.Strays[0].Iface != "docker0" {
		t.Fatalf("strays found: %+v; want docker0's 10.244.15.1/24 alone; logs:\n%s", res.Found, h.logText())
	}
}
