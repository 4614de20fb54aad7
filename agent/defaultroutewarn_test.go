package agent

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestDefaultRouteWarning: the warning that the default route's interface,
// chosen with no flag naming the underlay, may not be on the hosts'
// network, asked of the kernel's routes in a namespace made as each kind
// of host (see TestDefaultRouteWarnedAtStart for the whole agent). It is
// given when most peers' public IPs, or with no peer every etcd address,
// are routed through another interface; not on an ordinary host with one
// network, nor when the hosts meet through the default route and etcd is
// elsewhere (a management network), nor for etcd on this host. The
// interface chosen is the default route's in every case: the warning
// changes nothing of flanneld's choice.
func TestDefaultRouteWarning(t *testing.T) {
	ip := netip.MustParseAddr
	addrs := func(s ...string) []netip.Addr {
		var out []netip.Addr
		for _, a := range s {
			out = append(out, ip(a))
		}
		return out
	}
	for _, host := range []struct {
		name string
		// make builds the host: eth0 holds the default route.
		make  func(t *testing.T) *netlink.Handle
		cases []struct {
			name        string
			peers, etcd []netip.Addr
			want        []string // each in the warning; none: no warning
		}
	}{
		{
			// A NAT or public NIC with the default route, and the
			// network the hosts and etcd share on eth1.
			name: "public NIC and shared network",
			make: func(t *testing.T) *netlink.Handle {
				h := newTestNS(t)
				eth0 := addVeth(t, h, "eth0", "198.19.0.1/24")
				addVeth(t, h, "eth1", "198.18.0.1/24")
				addDefaultRoute(t, h, eth0, "198.19.0.254")
				return h
			},
			cases: []struct {
				name        string
				peers, etcd []netip.Addr
				want        []string
			}{
				{"peers on eth1", addrs("198.18.0.2", "198.18.0.3"), addrs("198.18.0.254"),
					[]string{"eth0 was chosen as the default route's interface", "2 of 2 peers' public IPs are routed through eth1", "--iface=eth1 or --iface-can-reach=198.18.0.2"}},
				{"most peers on eth1", addrs("198.19.7.2", "198.18.0.2", "198.18.0.3"), nil,
					[]string{"2 of 3 peers' public IPs are routed through eth1", "--iface-can-reach=198.18.0.2"}},
				{"first host, etcd on eth1", nil, addrs("198.18.0.254"),
					[]string{"etcd (198.18.0.254) is routed through eth1", "--iface=eth1 or --iface-can-reach=198.18.0.254"}},
				{"half the peers on eth1", addrs("198.19.7.2", "198.18.0.2"), addrs("198.18.0.254"), nil},
				// Hosts in other L3 networks, reached through the default
				// gateway; etcd on a management network.
				{"peers through the default route", addrs("198.19.7.2", "198.19.8.2"), addrs("198.18.0.254"), nil},
				{"peers behind this host's own address", addrs("198.19.0.1"), addrs("198.18.0.254"), nil},
				{"etcd on this host", nil, addrs("127.0.0.1", "198.18.0.1"), nil},
				{"etcd on both networks", nil, addrs("198.18.0.254", "198.19.0.254"), nil},
			},
		},
		{
			name: "one network",
			make: func(t *testing.T) *netlink.Handle {
				h := newTestNS(t)
				eth0 := addVeth(t, h, "eth0", "198.18.0.1/24")
				addDefaultRoute(t, h, eth0, "198.18.0.254")
				return h
			},
			cases: []struct {
				name        string
				peers, etcd []netip.Addr
				want        []string
			}{
				{"peers", addrs("198.18.0.2", "198.18.0.3"), addrs("198.18.0.254"), nil},
				{"first host", nil, addrs("198.18.0.254"), nil},
				{"peers in other networks", addrs("198.19.7.2"), addrs("127.0.0.1"), nil},
			},
		},
	} {
		t.Run(host.name, func(t *testing.T) {
			h := host.make(t)
			ext, err := findExternalInterface(h, &Config{})
			if err != nil {
				t.Fatal(err)
			}
			if ext.Iface.Name != "eth0" {
				t.Fatalf("interface %s chosen, want eth0, the default route's", ext.Iface.Name)
			}
			for _, tc := range host.cases {
				got, err := checkDefaultRoute(h, ext.Iface.Name, ext.IfaceAddr, tc.peers, tc.etcd)
				switch {
				case err != nil:
					t.Errorf("%s: %v", tc.name, err)
				case len(tc.want) == 0 && got != "":
					t.Errorf("%s: warned %q, want nothing", tc.name, got)
				case len(tc.want) > 0 && got == "":
					t.Errorf("%s: no warning, want one saying %q", tc.name, tc.want)
				}
				for _, w := range tc.want {
					if !strings.Contains(got, w) {
						t.Errorf("%s: warning %q does not say %q", tc.name, got, w)
					}
				}
			}
		})
	}
}

// addDefaultRoute adds the default route via gw on link.
func addDefaultRoute(t *testing.T, h *netlink.Handle, link netlink.Link, gw string) {
	t.Helper()
	if err := h.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.ParseIP(gw)}); err != nil {
		t.Fatalf("add default route via %s: %v", gw, err)
	}
}

// TestDefaultRouteWarningOnlyWhenLeftToIt: any flag that names the
// underlay, --public-ip too, means the operator chose it: no check.
func TestDefaultRouteWarningOnlyWhenLeftToIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want bool
	}{
		{"no flag", Config{}, true},
		{"--iface", Config{Ifaces: []string{"eth0"}}, false},
		{"--iface-regex", Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^eth")}}, false},
		{"--iface-can-reach", Config{IfaceCanReach: netip.MustParseAddr("198.18.0.254")}, false},
		{"--public-ip", Config{PublicIP: netip.MustParseAddr("198.18.100.100")}, false},
	} {
		if got := ifaceLeftToDefaultRoute(&tc.cfg); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}
