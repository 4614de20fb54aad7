package nstest

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddVeth creates the veth pair name–peer in the namespace, gives name the
// address addr (if valid), sets both ends up and returns name's link. Both
// ends stay in the namespace: the pair is an underlay with carrier that
// leads nowhere.
func (n *NS) AddVeth(t testing.TB, name, peer string, addr netip.Prefix) netlink.Link {
	t.Helper()
	h := n.Handle
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer}); err != nil {
		t.Fatalf("add veth %s/%s: %v", name, peer, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	if addr.IsValid() {
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(addr)}); err != nil {
			t.Fatalf("add %s to %s: %v", addr, name, err)
		}
	}
	for _, ifname := range []string{name, peer} {
		if err := h.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: ifname}}); err != nil {
			t.Fatalf("set %s up: %v", ifname, err)
		}
	}
	if l, err = h.LinkByName(name); err != nil {
		t.Fatalf("look up %s: %v", name, err)
	}
	return l
}

// State prints what the namespace holds, one sorted line per object, in a
// form close to iproute2's:
//
//	link <name> <type> <up|down> mtu <n> [mac <mac> vni <n> port <n> [local <ip>] [dev <name>] learning|nolearning]
//	addr <dev> <prefix>
//	route <dst> [via <gw>] dev <dev> [onlink] proto <n> [metric <n>] [type <n>]
//	neigh <dev> <ip> lladdr <mac> <state>
//	fdb <dev> <mac> dst <ip> <state>
//
// Only IPv4 is shown; loopback, routes the kernel made for addresses
// (proto kernel) and the FDB entries of links other than vxlan devices are
// left out. MAC addresses are shown only for vxlan devices (veth MACs are
// random).
func (n *NS) State(t testing.TB) string {
	t.Helper()
	lines, err := state(n.Handle)
	if err != nil {
		t.Fatalf("dump %s: %v", n.Name, err)
	}
	return strings.Join(lines, "\n") + "\n"
}

func state(h *netlink.Handle) ([]string, error) {
	links, err := backend.ListLinks(h)
	if err != nil {
		return nil, err
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	dev := func(i int) string {
		if s, ok := names[i]; ok {
			return s
		}
		return fmt.Sprintf("#%d", i)
	}
	var out []string
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 {
			continue
		}
		updown := "down"
		if a.Flags&net.FlagUp != 0 {
			updown = "up"
		}
		s := fmt.Sprintf("link %s %s %s mtu %d", a.Name, l.Type(), updown, a.MTU)
		if vx, ok := l.(*netlink.Vxlan); ok {
			learning := "nolearning"
			if vx.Learning {
				learning = "learning"
			}
			s += fmt.Sprintf(" mac %s vni %d port %d", a.HardwareAddr, vx.VxlanId, vx.Port)
			if vx.SrcAddr != nil {
				s += " local " + vx.SrcAddr.String()
			}
			if vx.VtepDevIndex != 0 {
				s += " dev " + dev(vx.VtepDevIndex)
			}
			s += " " + learning
			fdb, err := backend.ListNeighs(h, a.Index, unix.AF_BRIDGE)
			if err != nil {
				return nil, err
			}
			for _, f := range fdb {
				if f.LinkIndex != a.Index {
					continue
				}
				out = append(out, fmt.Sprintf("fdb %s %s dst %s %s", a.Name, f.HardwareAddr, f.IP, nudState(f.State)))
			}
		}
		out = append(out, s)
	}
	addrs, err := backend.ListAddrs(h, nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.LinkIndex == 1 && a.IP.IsLoopback() {
			continue
		}
		out = append(out, fmt.Sprintf("addr %s %s", dev(a.LinkIndex), a.IPNet))
	}
	routes, err := backend.ListRoutes(h, netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		s := "route "
		if r.Dst == nil {
			s += "default"
		} else {
			s += r.Dst.String()
		}
		if r.Gw != nil {
			s += " via " + r.Gw.String()
		}
		s += " dev " + dev(r.LinkIndex)
		if r.Flags&int(netlink.FLAG_ONLINK) != 0 {
			s += " onlink"
		}
		s += fmt.Sprintf(" proto %d", int(r.Protocol))
		if r.Priority != 0 {
			s += fmt.Sprintf(" metric %d", r.Priority)
		}
		if r.Type != unix.RTN_UNICAST {
			s += fmt.Sprintf(" type %d", r.Type)
		}
		out = append(out, s)
	}
	neighs, err := backend.ListNeighs(h, 0, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	for _, nb := range neighs {
		out = append(out, fmt.Sprintf("neigh %s %s lladdr %s %s", dev(nb.LinkIndex), nb.IP, nb.HardwareAddr, nudState(nb.State)))
	}
	slices.Sort(out)
	return out, nil
}

func nudState(s int) string {
	var names []string
	for _, st := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "incomplete"},
		{netlink.NUD_REACHABLE, "reachable"},
		{netlink.NUD_STALE, "stale"},
		{netlink.NUD_DELAY, "delay"},
		{netlink.NUD_PROBE, "probe"},
		{netlink.NUD_FAILED, "failed"},
		{netlink.NUD_NOARP, "noarp"},
		{netlink.NUD_PERMANENT, "permanent"},
	} {
		if s&st.bit != 0 {
			names = append(names, st.name)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ",")
}

// ChurnAddresses makes address events on link that must wake no backend's
// Watch: it turns IPv6 on for link (New turns it off), so the kernel gives
// it a link-local address now and again each time it comes up, then adds
// and deletes each of addrs and a link-local fe80::99/64 (without duplicate
// address detection), and sets link down and up.
func (n *NS) ChurnAddresses(t testing.TB, link netlink.Link, addrs ...string) {
	t.Helper()
	if err := n.Sysctl("net.ipv6.conf."+link.Attrs().Name+".disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	var as []*netlink.Addr
	for _, p := range addrs {
		as = append(as, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(p))})
	}
	as = append(as, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("fe80::99/64")), Flags: unix.IFA_F_NODAD})
	for _, a := range as {
		if err := n.Handle.AddrAdd(link, a); err != nil {
			t.Fatalf("add %s: %v", a.IPNet, err)
		}
	}
	for _, a := range as {
		if err := n.Handle.AddrDel(link, a); err != nil {
			t.Fatalf("delete %s: %v", a.IPNet, err)
		}
	}
	if err := errors.Join(n.Handle.LinkSetDown(link), n.Handle.LinkSetUp(link)); err != nil {
		t.Fatal(err)
	}
}
