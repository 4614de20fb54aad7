package vxlan

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestOwnSubnetRouteOnBridgeLeft: another program's route to our own
// subnet through cni0 (here proto static, cni0's address added with
// noprefixroute) carries our own pods' traffic, and is no route of ours to
// delete: only one through the external interface is (flanneld's, left
// from when a peer held the subnet: TestForeignRouteToOwnSubnet).
func TestOwnSubnetRouteOnBridgeLeft(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	cni0 := h.ns.AddVeth(t, "cni0", "cni0p", netip.Prefix{})
	if err := nl.AddrAdd(cni0, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.1/24")), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		t.Fatal(err)
	}
	own := netip.MustParsePrefix("10.244.1.0/24")
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(own), LinkIndex: cni0.Attrs().Index, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	for pass := 1; pass <= 2; pass++ {
		if res := h.reconcile(p2); res.Removed != 0 || res.Updated != 0 {
			t.Fatalf("pass %d: %v; want nothing removed or updated", pass, res)
		}
	}
	if got, want := h.routesTo(own.String()), fmt.Sprintf("10.244.1.0/24 dev#%d proto %d", cni0.Attrs().Index, unix.RTPROT_STATIC); got != want {
		t.Fatalf("routes to our subnet after the passes: %q; want cni0's, %q", got, want)
	}
}
