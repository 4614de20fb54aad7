package agent

import (
	"net"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestUnderlayInNetwork: an external interface whose address, or a public
// IP, lies in the cluster network (IPv4 Network; IPv6Network when IPv6 is
// enabled) is refused, with the interface, the option that chose it and
// the network named; one outside both is taken.
func TestUnderlayInNetwork(t *testing.T) {
	ip, pfx := netip.MustParseAddr, netip.MustParsePrefix
	c := &subnet.Config{EnableIPv4: true, Network: pfx("10.244.0.0/16"), EnableIPv6: true, IPv6Network: pfx("fd00:10:244::/48")}
	ext := func(name, addr, pub string) backend.ExternalInterface {
		return backend.ExternalInterface{Iface: &net.Interface{Name: name, Index: 7}, IfaceAddr: ip(addr), PublicIP: ip(pub)}
	}
	for _, tt := range []struct {
		name string
		ext  backend.ExternalInterface
		v6   []netip.Addr
		want []string // "" for no error
	}{
		{"the underlay", ext("eth0", "198.18.0.1", "198.18.0.1"), []netip.Addr{ip("fd00:198:18::1"), ip("fe80::1")}, nil},
		{"behind NAT", ext("eth0", "198.18.0.1", "198.19.0.1"), nil, nil},
		{"a bridge of the overlay", ext("cni0", "10.244.5.1", "10.244.5.1"), nil,
			[]string{"external interface cni0 (chosen by --iface=cni0) has the address 10.244.5.1, inside the cluster Network 10.244.0.0/16", "not the underlay", "--iface"}},
		{"the network's first address", ext("cni0", "10.244.0.0", "10.244.0.0"), nil, []string{"inside the cluster Network 10.244.0.0/16"}},
		{"the network's last address", ext("cni0", "10.244.255.255", "10.244.255.255"), nil, []string{"inside the cluster Network 10.244.0.0/16"}},
		{"just outside", ext("eth0", "10.245.0.0", "10.243.255.255"), nil, nil},
		{"--public-ip in the network", ext("eth0", "198.18.0.1", "10.244.9.9"), nil,
			[]string{"public IP 10.244.9.9 (--public-ip; external interface eth0, chosen by --iface=cni0) is inside the cluster Network 10.244.0.0/16", "give --public-ip"}},
		{"an IPv6 address in IPv6Network", ext("br0", "198.18.0.1", "198.18.0.1"), []netip.Addr{ip("fe80::1"), ip("fd00:10:244:5::1")},
			[]string{"external interface br0 (chosen by --iface=cni0) has the address fd00:10:244:5::1, inside the cluster IPv6Network fd00:10:244::/48"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := underlayInNetwork(c, tt.ext, "--iface=cni0", tt.v6)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("taken, want refused")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not say %q", err, w)
				}
			}
		})
	}
	// IPv6 disabled: IPv6Network (left from an earlier config) is not
	// the cluster's.
	off := *c
	off.EnableIPv6 = false
	if err := underlayInNetwork(&off, ext("br0", "198.18.0.1", "198.18.0.1"), "x", []netip.Addr{ip("fd00:10:244:5::1")}); err != nil {
		t.Errorf("IPv6 disabled: %v", err)
	}
}

// TestUnderlayChoiceInNetwork: every way of choosing the external
// interface that can land on cni0, a bridge holding 10.244.5.1/24 of the
// cluster network, is refused once the network is known, and the error
// names the interface and the option. Before, --iface=cni0 was taken, and
// the host advertised 10.244.5.1 as its public IP.
//
//	eth0  198.18.0.1/24
//	cni0  bridge, 10.244.5.1/24, fd00:10:244:5::1/64
//	eth1  198.18.1.1/24, fd00:10:244:6::1/64
func TestUnderlayChoiceInNetwork(t *testing.T) {
	h := newTestNS(t)
	addVeth(t, h, "eth0", "198.18.0.1/24")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("add cni0: %v", err)
	}
	// A bridge's address is up and routed once it has a port that is up.
	port := addVeth(t, h, "veth1")
	if err := h.LinkSetMaster(port, br); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(br); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"10.244.5.1/24", "fd00:10:244:5::1/64"} {
		addr, _ := netlink.ParseAddr(a)
		if err := h.AddrAdd(br, addr); err != nil {
			t.Fatalf("add %s to cni0: %v", a, err)
		}
	}
	eth1 := addVeth(t, h, "eth1", "198.18.1.1/24")
	addr6, _ := netlink.ParseAddr("fd00:10:244:6::1/64")
	if err := h.AddrAdd(eth1, addr6); err != nil {
		t.Fatal(err)
	}
	ip, pfx := netip.MustParseAddr, netip.MustParsePrefix
	c := &subnet.Config{EnableIPv4: true, Network: pfx("10.244.0.0/16"), EnableIPv6: true, IPv6Network: pfx("fd00:10:244::/48")}
	for _, tt := range []struct {
		name    string
		cfg     Config
		viaCNI0 bool // the default route goes through cni0
		want    string
	}{
		{"--iface by name", Config{Ifaces: []string{"cni0"}}, false, "external interface cni0 (chosen by --iface=cni0) has the address 10.244.5.1, inside the cluster Network 10.244.0.0/16"},
		{"--iface by address", Config{Ifaces: []string{"10.244.5.1"}}, false, "external interface cni0 (chosen by --iface=10.244.5.1) has the address 10.244.5.1"},
		{"--iface-regex on a name", Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile("^cni")}}, false, "external interface cni0 (chosen by --iface-regex=^cni) has the address 10.244.5.1"},
		{"--iface-regex on an address", Config{IfaceRegexes: []*regexp.Regexp{regexp.MustCompile(`^10\.244\.`)}}, false, `external interface cni0 (chosen by --iface-regex=^10\.244\.) has the address 10.244.5.1`},
		{"--iface-can-reach", Config{IfaceCanReach: ip("10.244.5.7")}, false, "external interface cni0 (chosen by --iface-can-reach=10.244.5.7) has the address 10.244.5.1"},
		{"--public-ip held by cni0", Config{PublicIP: ip("10.244.5.1")}, false, "external interface cni0 (chosen by --public-ip=10.244.5.1 (an address of cni0)) has the address 10.244.5.1"},
		{"the default route", Config{}, true, "external interface cni0 (chosen by the default route (no --iface)) has the address 10.244.5.1"},
		{"--public-ip in the network, held by none", Config{Ifaces: []string{"eth0"}, PublicIP: ip("10.244.77.1")}, false, "public IP 10.244.77.1 (--public-ip; external interface eth0, chosen by --iface=eth0) is inside the cluster Network"},
		{"an IPv6 address in IPv6Network", Config{Ifaces: []string{"eth1"}}, false, "external interface eth1 (chosen by --iface=eth1) has the address fd00:10:244:6::1, inside the cluster IPv6Network fd00:10:244::/48"},
		{"the underlay", Config{Ifaces: []string{"eth0"}}, false, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.viaCNI0 {
				r := &netlink.Route{LinkIndex: br.Attrs().Index, Gw: net.ParseIP("10.244.5.254")}
				if err := h.RouteAdd(r); err != nil {
					t.Fatalf("add default route via cni0: %v", err)
				}
				defer h.RouteDel(r)
			}
			ext, how, err := chooseExternalInterfaceIn(h, &tt.cfg)
			if err != nil {
				t.Fatalf("no interface chosen: %v", err)
			}
			var v6 []netip.Addr
			l, err := h.LinkByIndex(ext.Iface.Index)
			if err != nil {
				t.Fatal(err)
			}
			addrs, err := h.AddrList(l, netlink.FAMILY_V6)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range addrs {
				v6 = append(v6, netip.MustParseAddr(a.IP.String()))
			}
			err = underlayInNetwork(c, ext, how, v6)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("%s (%s) refused: %v", ext.Iface.Name, how, err)
			case tt.want != "" && err == nil:
				t.Errorf("%s %s (%s) taken, want refused", ext.Iface.Name, ext.IfaceAddr, how)
			case tt.want != "" && !strings.Contains(err.Error(), tt.want):
				t.Errorf("error %q\ndoes not say %q", err, tt.want)
			}
		})
	}
}
