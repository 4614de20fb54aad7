package agent

import (
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// The overlay's own devices are never taken for the underlay. A running
// host has them (shutdown leaves the datapath in place), and their addresses
// lie in the cluster network, so an --iface or regex aimed at the overlay, or
// --iface-can-reach given a pod address, found them. Before, agentd took
// flannel.1 (`--iface=flannel.1`, `--iface-regex='^10\.244\.'`): the vxlan
// backend deleted the running device as "incompatible" (local address
// 198.18.0.1, want 10.244.5.0), failed to create it over itself, and the
// host was left without its datapath.
//
//	lo         127.0.0.1
//	eth0       198.18.0.1/24, default route via 198.18.0.254
//	flannel.1  vxlan VNI 1 over eth0, 10.244.5.0/32; 10.244.0.0/16 dev flannel.1
//	flannel0   TUN, 10.244.6.0/32
func TestFindExternalInterfaceNotOverlay(t *testing.T) {
	h, ns := newTestNSNamed(t)
	eth0, _ := addUnderlayAndVXLAN(t, h)
	// A TUN device is made in the namespace of the thread that opens
	// /dev/net/tun, so by ip in the test's namespace, not by h.
	if out, err := exec.Command("ip", "-n", ns, "tuntap", "add", "dev", "flannel0", "mode", "tun").CombinedOutput(); err != nil {
		t.Fatalf("add flannel0: %v: %s", err, out)
	}
	for name, addr := range map[string]string{"flannel.1": "10.244.5.0/32", "flannel0": "10.244.6.0/32"} {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a, _ := netlink.ParseAddr(addr)
		if err := h.AddrAdd(l, a); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	vxl, err := h.LinkByName("flannel.1")
	if err != nil {
		t.Fatal(err)
	}
	_, overlay, _ := net.ParseCIDR("10.244.0.0/16")
	if err := h.RouteAdd(&netlink.Route{LinkIndex: vxl.Attrs().Index, Dst: overlay, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	regex := func(s string) []*regexp.Regexp { return []*regexp.Regexp{regexp.MustCompile(s)} }

	for _, tt := range []struct {
		name  string
		cfg   Config
		iface string // the one chosen, or "" for an error
		err   string // what the error says
	}{
		{name: "vxlan device by name", cfg: Config{Ifaces: []string{"flannel.1"}}, err: `--iface "flannel.1" (the overlay's vxlan device, not an underlay)`},
		{name: "TUN device by name", cfg: Config{Ifaces: []string{"flannel0"}}, err: `--iface "flannel0" (the overlay's TUN device, not an underlay)`},
		{name: "by its address", cfg: Config{Ifaces: []string{"10.244.5.0"}}, err: `--iface "10.244.5.0" (an address of flannel.1, the overlay's vxlan device, not an underlay)`},
		{name: "next in the list", cfg: Config{Ifaces: []string{"flannel.1", "eth0"}}, iface: "eth0"},
		{name: "regex on overlay addresses", cfg: Config{IfaceRegexes: regex(`^10\.244\.`)}, err: `--iface-regex "^10\\.244\\." `},
		{name: "regex on names", cfg: Config{IfaceRegexes: regex(`^flannel`)}, err: `--iface-regex "^flannel" `},
		{name: "regex passes them by", cfg: Config{IfaceRegexes: regex(`^(10\.244|198\.18)\.`)}, iface: "eth0"},
		{name: "can-reach a pod", cfg: Config{IfaceCanReach: netip.MustParseAddr("10.244.9.2")}, err: `--iface-can-reach 10.244.9.2 (routed through flannel.1, the overlay's vxlan device, not an underlay)`},
		{name: "public IP on the overlay", cfg: Config{PublicIP: netip.MustParseAddr("10.244.5.0")}, iface: "eth0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ext, err := findExternalInterface(h, &tt.cfg)
			if tt.iface != "" {
				if err != nil || ext.Iface.Name != tt.iface {
					t.Fatalf("got %v, %v; want %s", ext.Iface, err, tt.iface)
				}
				return
			}
			if err == nil {
				t.Fatalf("chose %s %s, want an error naming %s", ext.Iface.Name, ext.IfaceAddr, tt.err)
			}
			if !strings.HasPrefix(err.Error(), "no interface matches "+tt.err) {
				t.Errorf("error:\n got %v\nwant no interface matches %s…", err, tt.err)
			}
			if _, have, _ := strings.Cut(err.Error(), "(have: "); have != "eth0p, eth0 198.18.0.1)" {
				t.Errorf("error %v\nlists as candidates %q, want eth0p and eth0 only (the overlay's devices and loopback are never taken)", err, have)
			}
		})
	}

	// A default route through the overlay's device is refused, not followed.
	if err := h.RouteDel(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.ParseIP("198.18.0.254")}); err != nil {
		t.Fatal(err)
	}
	def := &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: vxl.Attrs().Index, Dst: def, Scope: netlink.SCOPE_LINK}); err != nil {
		t.Fatal(err)
	}
	ext, err := findExternalInterface(h, &Config{})
	if want := "the default route uses flannel.1, the overlay's vxlan device, not an underlay; name the underlay with --iface"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("default route through flannel.1: got %v, %v; want %s…", ext.Iface, err, want)
	} else if !strings.HasSuffix(err.Error(), "(have: eth0p, eth0 198.18.0.1)") {
		t.Errorf("default route through flannel.1: %v\nwant the candidates eth0p and eth0 only", err)
	}
}
