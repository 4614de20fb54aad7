package backend

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ServesOnlyCluster says whether l, a device named like one of flanneld's
// or agentd's (flannel.<VNI>, flannel0) and of their type, serves nothing
// but a cluster network (network, divided into subnets of length
// subnetLen) as those programs leave it: in no bridge or other master and
// under no other link (deleting it would take those with it, or cut them
// off); with one address (IPv6 link-local aside), a /32 at a subnet's
// first address in network (<subnet>.0/32, the address both programs give
// it), or none; and with every IPv4 route through it, in any table, into
// network. links is every link of the namespace. It returns that address
// (not valid for none), or else why the device may serve something else
// (notOurs). agentd makes its device before it holds a lease, which gives
// the address: one stopped, or that took another config, while it waited
// for its first lease leaves it with none, which the caller accepts when
// it knows the device otherwise as agentd's. A device of another
// network has its address there; one made for another use has other
// addresses or routes, or a master, or a link on top. Backends use it to
// tell the devices they may delete as leftovers (an old VNI's, another
// backend's) from ones an operator made.
func ServesOnlyCluster(h *netlink.Handle, l netlink.Link, links []netlink.Link, network netip.Prefix, subnetLen int) (addr netip.Prefix, notOurs string, err error) {
	a := l.Attrs()
	if a.MasterIndex != 0 {
		return netip.Prefix{}, fmt.Sprintf("it is enslaved to link %d", a.MasterIndex), nil
	}
	idx := a.Index
	for _, o := range links {
		if oa := o.Attrs(); oa.Index != idx && onTopOf(o) == idx {
			return netip.Prefix{}, fmt.Sprintf("link %s is on top of it", oa.Name), nil
		}
	}
	addrs, err := addrsOf(h, l)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	if len(addrs) > 1 {
		return netip.Prefix{}, fmt.Sprintf("it has %d addresses %v, not one", len(addrs), addrs), nil
	}
	if len(addrs) == 1 {
		if p := addrs[0]; !p.Addr().Is4() || p.Bits() != 32 || !network.Contains(p.Addr()) ||
			netip.PrefixFrom(p.Addr(), subnetLen).Masked().Addr() != p.Addr() {
			return netip.Prefix{}, fmt.Sprintf("its address %s is not the /32 of a subnet's first address in the cluster network %s (subnets /%d)", p, network, subnetLen), nil
		}
		addr = addrs[0]
	}
	routes, err := ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return netip.Prefix{}, "", err
	}
	for _, r := range routes {
		through := r.LinkIndex == idx
		for _, hop := range r.MultiPath {
			through = through || hop.LinkIndex == idx
		}
		dst, _ := PrefixFromIPNet(r.Dst)
		if through && (!dst.IsValid() || dst.Bits() < network.Bits() || !network.Contains(dst.Addr())) {
			return netip.Prefix{}, fmt.Sprintf("a route to %v (table %d) goes through it", r.Dst, r.Table), nil
		}
	}
	return addr, "", nil
}

// DeviceAddrNote is how a log line says what ServesOnlyCluster found of a
// device's address addr.
func DeviceAddrNote(addr netip.Prefix) string {
	if !addr.IsValid() {
		return "no address (made before a lease gave it one)"
	}
	return "one address " + addr.String()
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
func addrsOf(h *netlink.Handle, l netlink.Link) ([]netip.Prefix, error) {
	addrs, err := ListAddrs(h, l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	var ps []netip.Prefix
	for _, a := range addrs {
		if p, ok := PrefixFromIPNet(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
			ps = append(ps, p)
		}
	}
	return ps, nil
}
