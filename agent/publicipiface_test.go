package agent

import (
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestFindExternalInterfaceByPublicIP: with --public-ip and none of
// --iface, --iface-regex and --iface-can-reach, flanneld v0.28.10 uses the
// interface that holds the public IP, not the default route's (seen in a
// test namespace: -public-ip naming the address of a second interface gave
// "vxlan id 1 local <that address> dev <that interface>" and that
// interface's MTU in subnet.env). Operators of multi-homed hosts choose the
// underlay so; agentd took the default route's interface instead, so its
// vxlan device sent from the other interface's address, with the other
// interface's MTU. An address no interface holds (a NAT address), or one
// only loopback holds, still leaves the choice to the default route:
// flanneld refuses to start there ("no interface with given IP found"),
// and an interface chosen for its address on lo would give the overlay
// lo's MTU.
func TestFindExternalInterfaceByPublicIP(t *testing.T) {
	h := testHost(t)
	lo, err := h.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	onLo, err := netlink.ParseAddr("198.18.77.1/32")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(lo, onLo); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	for _, tt := range []struct {
		name                  string
		cfg                   Config
		iface, ifaceAddr, pub string
	}{
		{"held by a second interface", Config{PublicIP: ip("198.19.3.1")}, "eth3", "198.19.3.1", "198.19.3.1"},
		{"a secondary address", Config{PublicIP: ip("198.18.1.2")}, "eth1", "198.18.1.2", "198.18.1.2"},
		{"held by no interface (NAT)", Config{PublicIP: ip("198.18.100.100")}, "eth0", "198.18.0.1", "198.18.100.100"},
		{"held only by loopback", Config{PublicIP: ip("198.18.77.1")}, "eth0", "198.18.0.1", "198.18.77.1"},
		{"--iface still chooses", Config{Ifaces: []string{"eth1"}, PublicIP: ip("198.19.3.1")}, "eth1", "198.18.1.1", "198.19.3.1"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := findExternalInterface(h, &tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if ext.Iface.Name != tt.iface || ext.IfaceAddr.String() != tt.ifaceAddr || ext.PublicIP.String() != tt.pub {
				t.Errorf("got %s %s public %s, want %s %s public %s", ext.Iface.Name, ext.IfaceAddr, ext.PublicIP, tt.iface, tt.ifaceAddr, tt.pub)
			}
		})
	}
}
