package vxlan

import (
	"fmt"
	"net"
	"syscall"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The kernel refuses a new VXLAN device (EEXIST: "A VXLAN device with the
// specified VNI already exists") when another one in the namespace has its
// VNI and UDP destination port, its address family (IPv6 when the local or
// remote address is IPv6) and its receive-path flags, those of
// VXLAN_F_RCV_FLAGS (drivers/net/vxlan/vxlan_core.c, vxlan_vni_in_use;
// include/net/vxlan.h): such devices would share one UDP socket that could
// not tell their packets apart. Local address, underlay device, learning and
// the other sending-side settings do not count; neither does anything else
// for an IPv4 device like ours (the kernel compares underlay devices only
// between IPv6 link-local ones).

// receiveFlags are the IFLA_VXLAN_* attributes that carry the
// receive-path flags in a link dump, each a flag attribute present when set
// or a u8 boolean; ours has none set. netlink.Vxlan carries only some.
var receiveFlags = []struct {
	attr uint16
	name string
}{
	{unix.IFLA_VXLAN_GBP, "group policy (gbp)"},
	{unix.IFLA_VXLAN_GPE, "generic protocol extension (gpe)"},
	{unix.IFLA_VXLAN_UDP_ZERO_CSUM6_RX, "zero UDP checksums over IPv6 accepted (udp6zerocsumrx)"},
	{unix.IFLA_VXLAN_REMCSUM_RX, "remote checksum offload received (remcsumrx)"},
	{unix.IFLA_VXLAN_REMCSUM_NOPARTIAL, "remote checksum offload without partial checksums"},
	{unix.IFLA_VXLAN_COLLECT_METADATA, "flow-based (external)"},
	{unix.IFLA_VXLAN_VNIFILTER, "VNI filtering (vnifilter)"},
}

// vniHolder returns the VXLAN device, other than one named as ours, that
// makes the kernel refuse ours: one with our VNI, UDP port and address
// family (IPv4) and none of the receive-path flags. It is nil when there is
// none.
func (b *Backend) vniHolder() (netlink.Link, error) {
	links, err := backend.ListLinks(b.h)
	if err != nil {
		return nil, err
	}
	v6 := func(ip net.IP) bool { return ip != nil && ip.To4() == nil }
	for _, l := range links {
		vx, ok := l.(*netlink.Vxlan)
		if !ok || vx.Name == b.name || vx.VxlanId != b.opts.VNI || vx.Port != b.opts.Port || v6(vx.SrcAddr) || v6(vx.Group) {
			continue
		}
		set, err := b.receiveFlagsSet(vx.Index)
		if backend.IsNotFound(err) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("read the flags of vxlan device %s: %w", vx.Name, err)
		}
		if len(set) == 0 {
			return vx, nil
		}
	}
	return nil, nil
}

// receiveFlagsSet names the receive-path flags set on the link with index
// idx, as the kernel reports them.
func (b *Backend) receiveFlagsSet(idx int) ([]string, error) {
	s, err := nl.GetNetlinkSocketAt(b.ns, netns.None(), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("open netlink: %w", err)
	}
	defer s.Close()
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	req.Sockets = map[int]*nl.SocketHandle{unix.NETLINK_ROUTE: {Socket: s}}
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(idx)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, fmt.Errorf("%d answers about link %d, want 1", len(msgs), idx)
	}
	return parseReceiveFlags(msgs[0])
}

// parseReceiveFlags names the receive-path flags set in msg, the body of an
// RTM_NEWLINK message about a vxlan link.
func parseReceiveFlags(msg []byte) ([]string, error) {
	if len(msg) < unix.SizeofIfInfomsg {
		return nil, fmt.Errorf("link message of %d bytes", len(msg))
	}
	data, err := nested(msg[unix.SizeofIfInfomsg:], unix.IFLA_LINKINFO, unix.IFLA_INFO_DATA)
	if err != nil || data == nil {
		return nil, err
	}
	attrs, err := backend.RouteAttrs(data)
	if err != nil {
		return nil, fmt.Errorf("vxlan attributes: %w", err)
	}
	var set []string
	for _, f := range receiveFlags {
		for _, a := range attrs {
			if a.Attr.Type&nl.NLA_TYPE_MASK == f.attr && (len(a.Value) == 0 || a.Value[0] != 0) {
				set = append(set, f.name)
			}
		}
	}
	return set, nil
}

// nested returns the value of the attribute at path, each element an
// attribute type inside the previous one's value, in the attributes b; nil
// when one is missing.
func nested(b []byte, path ...uint16) ([]byte, error) {
	for _, typ := range path {
		attrs, err := backend.RouteAttrs(b)
		if err != nil {
			return nil, fmt.Errorf("attribute %d: %w", typ, err)
		}
		var found *syscall.NetlinkRouteAttr
		for i := range attrs {
			if attrs[i].Attr.Type&nl.NLA_TYPE_MASK == typ {
				found = &attrs[i]
			}
		}
		if found == nil {
			return nil, nil
		}
		b = found.Value
	}
	return b, nil
}

// checkClash returns the error with which Prepare would refuse our device
// because another VXLAN device holds its VNI and port (takeBack), as far as
// that is told without the VTEP MAC a start settles (and may write): when
// the holder differs from our device in what only recreating it changes
// (incompatible). A holder that differs in its MAC alone may be ours
// renamed, which a start renames back, or another program's: it is not
// guessed at. Nil when our device is there and fit for use (Prepare creates
// nothing then), and when netlink does not answer: the start will tell.
func (b *Backend) checkClash() error {
	l, err := backend.LinkByName(b.h, b.name)
	if err != nil || l != nil && b.incompatible(l) == "" {
		return nil
	}
	holder, err := b.vniHolder()
	if err != nil || holder == nil {
		return nil
	}
	if why := b.incompatible(holder); why != "" {
		return b.clashError(unix.EEXIST, holder.Attrs().Name, why)
	}
	return nil
}
