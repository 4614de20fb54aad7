package vxlan

import (
	"context"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestDirectRoutingNoPrefixRoute: an address of the external interface
// added with noprefixroute (NetworkManager's way) puts no peer on the
// segment, since the kernel refuses a gateway that no scope-link route
// leads to. A peer in its subnet is encapsulated, not given a direct route
// that fails on every pass and leaves it unreachable, until a prefix route
// in the main table puts it on-link.
func TestDirectRoutingNoPrefixRoute(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	nl := h.ns.Handle
	addr := netip.MustParsePrefix("198.18.0.1/24")
	if err := nl.AddrDel(h.ext, &netlink.Addr{IPNet: backend.IPNet(addr)}); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(addr), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		t.Fatal(err)
	}
	near := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	for range 2 {
		if _, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{near}); err != nil {
			t.Fatalf("Reconcile: %v; want the peer encapsulated", err)
		}
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))

	seg := &netlink.Route{Dst: backend.IPNet(addr.Masked()), LinkIndex: h.ext.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Protocol: unix.RTPROT_STATIC, Priority: 100}
	if err := nl.RouteAdd(seg); err != nil {
		t.Fatal(err)
	}
	h.reconcile(near)
	h.check(withBase("route 198.18.0.0/24 dev ext0 proto 4 metric 100\nroute 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n"))
}
