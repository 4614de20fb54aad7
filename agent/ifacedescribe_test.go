package agent

import (
	"errors"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestDescribeInterfacesLeavesOverlayOut: the list after "have:" in
// "no interface matches --iface …" (and the default route's errors) is
// what an operator picks --iface from, and the overlay's own devices
// (flannel.<VNI>, flannel0) are never taken as the underlay. Before
// 2026-12-06 the list named them with their addresses in the cluster
// network ("flannel.1 10.244.5.0, flannel0 10.244.6.0"), as if they were
// candidates. A vxlan device of another name, or a TUN device of another
// name, is no overlay device of ours and stays listed.
func TestDescribeInterfacesLeavesOverlayOut(t *testing.T) {
	iface := func(name, kind string, addrs ...string) ifaceInfo {
		i := ifaceInfo{name: name, kind: kind}
		if name == "lo" {
			i.attrs.Flags = net.FlagLoopback
		}
		for _, a := range addrs {
			i.addrs = append(i.addrs, netip.MustParseAddr(a))
		}
		return i
	}
	for _, tt := range []struct {
		ifs  []ifaceInfo
		want string
	}{
		{
			ifs: []ifaceInfo{
				iface("lo", "device", "127.0.0.1"),
				iface("eth0", "device", "198.18.0.1"),
				iface("flannel.1", "vxlan", "10.244.5.0"),
				iface("flannel0", "tuntap", "10.244.6.0"),
				iface("vxlan0", "vxlan", "198.19.0.1"),
				iface("tun0", "tuntap"),
				{name: "eth1", kind: "device", addrErr: errors.New("EPERM")},
			},
			want: "eth0 198.18.0.1, vxlan0 198.19.0.1, tun0, eth1 (addresses unreadable)",
		},
		{ifs: []ifaceInfo{iface("flannel.1", "vxlan", "10.244.5.0")}, want: "no interfaces but the overlay's flannel.1"},
		{want: "no interfaces"},
	} {
		if got := describeInterfaces(tt.ifs); got != tt.want {
			t.Errorf("describeInterfaces:\n got %q\nwant %q", got, tt.want)
		}
	}
}

// TestDescribeInterfacesLeavesLoopbackOut: loopback is no candidate for the
// underlay either (no peer can reach 127.0.0.1; regexes, --public-ip and the
// default route pass it by), yet before 2026-12-07 every such error began
// "(have: lo 127.0.0.1, …". A host with nothing else is told what was left
// out rather than "no interfaces".
func TestDescribeInterfacesLeavesLoopbackOut(t *testing.T) {
	lo := ifaceInfo{name: "lo", kind: "device", attrs: netlink.LinkAttrs{Flags: net.FlagLoopback}, addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	loDown := ifaceInfo{name: "lo", kind: "device", attrs: netlink.LinkAttrs{Flags: net.FlagLoopback}}
	eth0 := ifaceInfo{name: "eth0", kind: "veth", addrs: []netip.Addr{netip.MustParseAddr("198.18.0.1")}}
	vxl := ifaceInfo{name: "flannel.1", kind: "vxlan", addrs: []netip.Addr{netip.MustParseAddr("10.244.5.0")}}
	for _, tt := range []struct {
		ifs  []ifaceInfo
		want string
	}{
		{ifs: []ifaceInfo{lo, eth0}, want: "eth0 198.18.0.1"},
		{ifs: []ifaceInfo{loDown, eth0, vxl}, want: "eth0 198.18.0.1"},
		{ifs: []ifaceInfo{lo}, want: "no interfaces but loopback lo"},
		{ifs: []ifaceInfo{loDown, vxl}, want: "no interfaces but loopback lo and the overlay's flannel.1"},
	} {
		if got := describeInterfaces(tt.ifs); got != tt.want {
			t.Errorf("describeInterfaces:\n got %q\nwant %q", got, tt.want)
		}
	}
}
