package hostgw

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestOnLinkNoPrefixRoute: an address added with noprefixroute (as
// NetworkManager adds every address, then the prefix route itself: in the
// main table, or with ipv4.route-table in a table of its own) makes nothing
// on-link. The kernel refuses a gateway that no scope-link route leads to
// ("Nexthop has invalid gateway"), looking it up through the policy rules:
// a rule "from <our address>" does not match that lookup. A peer on such a
// segment is skipped as off-link, not retried and failed on every pass,
// and is routed once a route puts its address on-link.
func TestOnLinkNoPrefixRoute(t *testing.T) {
	h, seg := newNoPrefixRouteHost(t)
	nl, ext := h.ns.Handle, h.ext.Attrs().Index
	// The segment's route in table 100, used for traffic from our address
	// only.
	rule := netlink.NewRule()
	rule.Src, rule.Table, rule.Priority = backend.IPNet(netip.MustParsePrefix("198.18.0.1/32")), 100, 100
	if err := nl.RuleAdd(rule); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	for range 2 {
		res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2})
		if err != nil {
			t.Fatalf("Reconcile: %v; want the peer skipped as off-link", err)
		}
		if res.String() != (backend.Result{Skipped: 1}).String() {
			t.Errorf("result %v, want 1 skipped", res)
		}
	}
	h.check("")
	if n := h.countLogs(fmt.Sprintf(`"lease"=%q "reason"="public IP 198.18.0.2 is not on-link: ext0 has no on-link network `+
		`(its address in 198.18.0.0/24 was added with noprefixroute, and no scope-link route of the main table leads there); `+
		`this host has no route to it; host-gw needs all hosts on one L2 segment"`, p2.Key())); n != 1 {
		t.Errorf("logged the off-link peer %d times, want once", n)
	}

	// NetworkManager's prefix route in the main table puts it on-link.
	if err := nl.RouteAdd(&netlink.Route{Dst: seg, LinkIndex: ext, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC, Priority: 100}); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(p2); res.String() != (backend.Result{Added: 1}).String() {
		t.Errorf("with the prefix route: result %v, want 1 added", res)
	}
	h.check("route 198.18.0.0/24 dev ext0 proto 4 metric 100\nroute 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74")
}

// TestOnLinkNoPrefixRouteByPolicyRule: with the segment's route of a
// noprefixroute address in a table of its own and a rule that the kernel's
// check of a main-table route's gateway matches (by output interface, or
// for every packet), the kernel accepts the peer as a gateway, and host-gw
// routes it, as it did before noprefixroute addresses stopped counting as
// on-link. Without such a rule the peer stays off-link
// (TestOnLinkNoPrefixRoute).
func TestOnLinkNoPrefixRouteByPolicyRule(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule func(r *netlink.Rule)
	}{
		{"oif", func(r *netlink.Rule) { r.OifName = "ext0" }},
		{"from_all", func(*netlink.Rule) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, _ := newNoPrefixRouteHost(t)
			nl := h.ns.Handle
			rule := netlink.NewRule()
			rule.Table, rule.Priority = 100, 100
			tc.rule(rule)
			if err := nl.RuleAdd(rule); err != nil {
				t.Fatal(err)
			}
			p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
			if res := h.reconcile(p2); res.String() != (backend.Result{Added: 1}).String() {
				t.Errorf("result %v, want 1 added", res)
			}
			h.check("route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74")
		})
	}
}

// newNoPrefixRouteHost is a prepared host whose address on ext0,
// 198.18.0.1/24, has noprefixroute, with the segment's scope-link route in
// table 100 only, as NetworkManager with ipv4.route-table leaves it.
func newNoPrefixRouteHost(t *testing.T) (*host, *net.IPNet) {
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	nl := h.ns.Handle
	addr := netip.MustParsePrefix("198.18.0.1/24")
	if err := nl.AddrDel(h.ext, &netlink.Addr{IPNet: backend.IPNet(addr)}); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(addr), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	seg := backend.IPNet(netip.MustParsePrefix("198.18.0.0/24"))
	if err := nl.RouteAdd(&netlink.Route{Dst: seg, LinkIndex: h.ext.Attrs().Index, Scope: netlink.SCOPE_LINK, Table: 100}); err != nil {
		t.Fatal(err)
	}
	return h, seg
}
