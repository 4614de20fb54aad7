package vxlan

import (
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
)

// TestDeviceTTLRecreated: a flannel.1 recreated by someone else with a fixed
// TTL (ttl 1 drops every packet to a peer behind a router) is recreated with
// the kernel's default, the route's hop limit; a second pass changes nothing.
func TestDeviceTTLRecreated(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := ns.Handle.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1"},
		VxlanId: 1, Port: 8472, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext.Attrs().Index, TTL: 1}); err != nil {
		t.Fatal(err)
	}
	h := hostIn(t, ns, `{"Type":"vxlan"}`)
	h.reconcile()
	h.check(base)
	if ttl := h.link("flannel.1").(*netlink.Vxlan).TTL; ttl != 0 {
		t.Errorf("flannel.1 has TTL %d, want 0 (the route's hop limit)", ttl)
	}
	if res := h.reconcile(); res.Changed() {
		t.Errorf("a second Reconcile changed %v", res)
	}
}
