package agent

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestDefaultRouteWarningPolicyRouting: the peers' routes are asked as the
// encapsulated packets are routed, from the chosen interface's address. On
// a host whose rules send what leaves from eth0's address through eth0 (as
// amazon-ec2-net-utils sets up each ENI) while the main table reaches the
// peers' network through eth1, the packets to the peers leave through
// eth0: nothing is wrong, and nothing is said. Before 2026-12-06 the routes
// were asked with no source, the main table answered eth1, and the agent
// said "2 of 2 peers' public IPs are routed through eth1 … restart agentd
// with --iface=eth1". Without the rule, the warning stays.
func TestDefaultRouteWarningPolicyRouting(t *testing.T) {
	peers := []netip.Addr{netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.3")}
	for _, rule := range []bool{true, false} {
		h := newTestNS(t)
		eth0 := addVeth(t, h, "eth0", "198.19.0.1/24")
		addVeth(t, h, "eth1", "198.18.0.1/24")
		addDefaultRoute(t, h, eth0, "198.19.0.254")
		if rule {
			const table = 100
			if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("198.19.0.254"), Table: table}); err != nil {
				t.Fatalf("add default route to table %d: %v", table, err)
			}
			r := netlink.NewRule()
			r.Src = &net.IPNet{IP: net.ParseIP("198.19.0.1"), Mask: net.CIDRMask(32, 32)}
			r.Table = table
			r.Priority = 1000
			if err := h.RuleAdd(r); err != nil {
				t.Fatalf("add rule from 198.19.0.1 lookup %d: %v", table, err)
			}
		}
		ext, err := findExternalInterface(h, &Config{})
		if err != nil {
			t.Fatal(err)
		}
		if ext.Iface.Name != "eth0" || ext.IfaceAddr != netip.MustParseAddr("198.19.0.1") {
			t.Fatalf("interface %s (%s) chosen, want eth0 (198.19.0.1), the default route's", ext.Iface.Name, ext.IfaceAddr)
		}
		got, err := checkDefaultRoute(h, ext.Iface.Name, ext.IfaceAddr, peers, nil)
		switch {
		case err != nil:
			t.Errorf("rule %v: %v", rule, err)
		case rule && got != "":
			t.Errorf("with the rule sending what leaves from 198.19.0.1 through eth0: warned %q, want nothing", got)
		case !rule && !strings.Contains(got, "2 of 2 peers' public IPs are routed through eth1"):
			t.Errorf("without the rule: warning %q, want one saying the peers are routed through eth1", got)
		}
	}
}
