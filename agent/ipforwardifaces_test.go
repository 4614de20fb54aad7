package agent

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestForwardingIfaces: the interfaces whose forwarding decides, per
// backend, in a namespace: the overlay's device where other hosts' packets
// arrive (vxlan's flannel.1, udp's flannel0), the external interface where
// they arrive as they are (host-gw, vxlan's DirectRouting), and the
// containers' bridge, the one holding this host's subnet (cni0 with
// 10.244.5.1/24), once it exists.
//
//	eth0      198.18.0.1/24, default route via 198.18.0.254
//	flannel.1 vxlan, 10.244.5.0/32
//	cni0      bridge, 10.244.5.1/24 (with a port up), made halfway
func TestForwardingIfaces(t *testing.T) {
	h, ns := newTestNSNamed(t)
	eth0, vx := addUnderlayAndVXLAN(t, h)
	a, _ := netlink.ParseAddr("10.244.5.0/32")
	if err := h.AddrAdd(vx, a); err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(vx); err != nil {
		t.Fatal(err)
	}
	ext := backend.ExternalInterface{Iface: &net.Interface{Name: "eth0", Index: eth0.Attrs().Index}, IfaceAddr: netip.MustParseAddr("198.18.0.1")}
	ext.PublicIP = ext.IfaceAddr
	own := netip.MustParsePrefix("10.244.5.0/24")
	cfg := func(backendJSON string) *subnet.Config {
		c, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":` + backendJSON + `}`))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	names := func(ifs []fwdIface) string {
		var n []string
		for _, f := range ifs {
			n = append(n, f.name)
		}
		return strings.Join(n, " ")
	}
	cases := []struct{ backend, before, after string }{
		{`{"Type":"vxlan"}`, "flannel.1", "flannel.1 cni0"},
		{`{"Type":"vxlan","VNI":4}`, "flannel.4", "flannel.4 cni0"},
		{`{"Type":"vxlan","DirectRouting":true}`, "flannel.1 eth0", "flannel.1 eth0 cni0"},
		{`{"Type":"host-gw"}`, "eth0", "eth0 cni0"},
		{`{"Type":"udp"}`, "flannel0", "flannel0 cni0"},
	}
	for _, c := range cases {
		if got := names(forwardingIfaces(h, cfg(c.backend), ext, own)); got != c.before {
			t.Errorf("%s, no bridge: %q, want %q", c.backend, got, c.before)
		}
	}
	// The bridge holds the subnet's first address, as dockerd's --bip or
	// the CNI bridge plugin gives it; its route is up once a port is.
	for _, args := range [][]string{
		{"link", "add", "cni0", "type", "bridge"},
		{"addr", "add", "10.244.5.1/24", "dev", "cni0"},
		{"link", "add", "veth1", "type", "veth", "peer", "name", "veth1p"},
		{"link", "set", "veth1", "master", "cni0"},
		{"link", "set", "veth1", "up"},
		{"link", "set", "veth1p", "up"},
		{"link", "set", "cni0", "up"},
	} {
		if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, c := range cases {
		if got := names(forwardingIfaces(h, cfg(c.backend), ext, own)); got != c.after {
			t.Errorf("%s, with cni0: %q, want %q", c.backend, got, c.after)
		}
	}
	// Another host's subnet is not this host's bridge.
	if got := names(forwardingIfaces(h, cfg(`{"Type":"host-gw"}`), ext, netip.MustParsePrefix("10.244.6.0/24"))); got != "eth0" {
		t.Errorf("host-gw, own subnet 10.244.6.0/24: %q, want %q", got, "eth0")
	}
}
