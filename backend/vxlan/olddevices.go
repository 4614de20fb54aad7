package vxlan

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// deleteOldDevices deletes the devices this agentd or flanneld made for
// another VNI (Backend.VNI changed, and agentd restarted to apply it). Such
// a device is no longer on any route of ours, yet its address, the
// <subnet>.0 of a subnet this host leased, makes a peer that leases that
// subnet later be skipped (backend.Segment.LocalIn). A device flannel.<N>, N
// not our VNI, is ours when
//
//   - the state dir keeps vxlan-<N>.mac, written on this host, and the
//     device is a vxlan device with VNI N and that file's MAC: random,
//     chosen by us (or taken from the flanneld device agentd replaced). The
//     file stays, so a return to VNI N brings its MAC back. Or, the state
//     dir lost (a new disk, a container without its hostPath):
//   - it is as only flanneld and agentd make it, and serves nothing else
//     (leftover): see leftover.
//
// Any other flannel.<N> is left alone and logged, with why and the command
// that deletes it. Failures are logged: the old device harms no peer that
// is programmed.
func (b *Backend) deleteOldDevices() {
	links, err := backend.ListLinks(b.h)
	if err != nil {
		b.log.Error(err, "look for the vxlan devices of other VNIs")
		return
	}
	for _, l := range links {
		name := l.Attrs().Name
		n, found := strings.CutPrefix(name, "flannel.")
		vni, err := strconv.Atoi(n)
		if !found || err != nil || strconv.Itoa(vni) != n || vni < 1 || vni > maxVNI || vni == b.opts.VNI {
			continue
		}
		why, err := b.provenOurs(l, vni)
		notOurs := ""
		if err == nil && why == "" {
			why, notOurs, err = b.leftover(l, vni, links)
		}
		if err != nil {
			b.log.Error(err, "look at a device named like a flannel vxlan device of another VNI", "device", name)
			continue
		}
		if why == "" {
			b.log.Info("leaving alone a device named like a flannel vxlan device of another VNI: not recognisably ours; "+
				"if it is a leftover of this cluster (an address of it in the cluster network makes peers whose subnet holds it be skipped), delete it",
				"device", name, "why", notOurs, "command", "ip link del "+name)
			continue
		}
		if err := b.h.LinkDel(l); err != nil && !backend.IsNotFound(err) {
			b.log.Error(err, "delete our vxlan device of another VNI", "device", name)
			continue
		}
		b.log.Info("deleted our vxlan device of a VNI the network used before", "device", name, "vni", vni, "why", why, "now", b.name)
	}
}

// provenOurs says why the state dir shows that l, named flannel.<vni>, is
// our device ("" when it does not).
func (b *Backend) provenOurs(l netlink.Link, vni int) (string, error) {
	file := fmt.Sprintf("vxlan-%d.mac", vni)
	content, err := os.ReadFile(filepath.Join(filepath.Dir(b.macPath), file))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the VTEP MAC file of VNI %d: %w", vni, err)
	}
	mac, addr, ok := parseMACFile(content)
	if !ok || addr.IsValid() && addr != b.ext.IfaceAddr {
		return "", nil
	}
	cur, _ := backend.MACFromHardwareAddr(l.Attrs().HardwareAddr)
	if vx, isVxlan := l.(*netlink.Vxlan); !isVxlan || vx.VxlanId != vni || cur != mac {
		return "", nil
	}
	return fmt.Sprintf("the state dir's %s, written on this host, holds its MAC %s", file, mac), nil
}

// leftover says why l, named flannel.<vni>, is a leftover of flanneld or
// agentd for the cluster network (ours), or else why it may not be one
// (notOurs); links is every link. A leftover is a vxlan device with VNI vni, not flow-based,
// learning off, local = our external interface's address; in no bridge or
// other master and under no other link; with one address (IPv6 link-local
// aside), a /32 in the cluster network at a subnet's start (<subnet>.0/32);
// and with every IPv4 route through it, in any table, into the cluster
// network. Another network's flannel device has its address in that
// network; a device someone made for another use has other addresses or
// routes, a master, learning or another local address. A device an operator
// made by hand with all of the above would be a second VTEP for one of the
// cluster's own subnets, which only breaks that subnet's routing.
func (b *Backend) leftover(l netlink.Link, vni int, links []netlink.Link) (ours, notOurs string, err error) {
	vx, ok := l.(*netlink.Vxlan)
	if !ok {
		return "", fmt.Sprintf("it is a %s link, not vxlan", l.Type()), nil
	}
	local, _ := backend.AddrFromIP(vx.SrcAddr)
	switch {
	case vx.VxlanId != vni:
		return "", fmt.Sprintf("its VNI is %d, not %d", vx.VxlanId, vni), nil
	case vx.FlowBased:
		return "", "it is flow-based (external)", nil
	case vx.Learning:
		return "", "learning is on", nil
	case local != b.ext.IfaceAddr:
		return "", fmt.Sprintf("its local address %v is not %s", local, b.ext.IfaceAddr), nil
	case vx.MasterIndex != 0:
		return "", fmt.Sprintf("it is enslaved to link %d", vx.MasterIndex), nil
	}
	idx := vx.Index
	for _, o := range links {
		if a := o.Attrs(); a.Index != idx && onTopOf(o) == idx {
			return "", fmt.Sprintf("link %s is on top of it", a.Name), nil
		}
	}
	addrs, err := b.addrsOf(l)
	if err != nil {
		return "", "", err
	}
	if len(addrs) != 1 {
		return "", fmt.Sprintf("it has %d addresses %v, not one", len(addrs), addrs), nil
	}
	if a := addrs[0]; !a.Addr().Is4() || a.Bits() != 32 || !b.network.Contains(a.Addr()) ||
		netip.PrefixFrom(a.Addr(), b.subnetLen).Masked().Addr() != a.Addr() {
		return "", fmt.Sprintf("its address %s is not the /32 of a subnet's first address in the cluster network %s (subnets /%d)", a, b.network, b.subnetLen), nil
	}
	routes, err := backend.ListRoutes(b.h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", "", err
	}
	for _, r := range routes {
		through := r.LinkIndex == idx
		for _, hop := range r.MultiPath {
			through = through || hop.LinkIndex == idx
		}
		dst, _ := backend.PrefixFromIPNet(r.Dst)
		if through && (!dst.IsValid() || dst.Bits() < b.network.Bits() || !b.network.Contains(dst.Addr())) {
			return "", fmt.Sprintf("a route to %v (table %d) goes through it", r.Dst, r.Table), nil
		}
	}
	return fmt.Sprintf("no state file shows it, but it is as only flanneld and agentd make it and serves nothing else: "+
		"vxlan VNI %d, learning off, local %s, one address %s in the cluster network %s, every route through it into that network",
		vni, local, addrs[0], b.network), "", nil
}

// onTopOf is the index of the link in this namespace that l is on top of,
// 0 for none: its IFLA_LINK (a VLAN's, a macvlan's), or a vxlan device's
// underlay, which the kernel deletes along with it. A link whose other end
// is in another namespace (a pod's veth: IFLA_LINK_NETNSID) names an index
// there, which may be any of ours.
func onTopOf(l netlink.Link) int {
	if l.Attrs().NetNsID >= 0 {
		return 0
	}
	if vx, ok := l.(*netlink.Vxlan); ok && vx.VtepDevIndex != 0 {
		return vx.VtepDevIndex
	}
	return l.Attrs().ParentIndex
}

// addrsOf lists l's addresses but the IPv6 link-local ones.
func (b *Backend) addrsOf(l netlink.Link) ([]netip.Prefix, error) {
	addrs, err := backend.ListAddrs(b.h, l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, a := range addrs {
		if p, ok := backend.PrefixFromIPNet(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			ps = append(ps, p)
		}
	}
	return ps, nil
}
