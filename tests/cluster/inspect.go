package cluster

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The dumps below print kernel state as sorted text lines, close to what
// `ip route`, `ip neigh` and `bridge fdb` show, so tests can compare them
// with expected text and print a readable diff.

// dump retries a netlink dump that the kernel interrupted because the table
// changed under it (netlink.ErrDumpInterrupted); results of an interrupted
// dump may be incomplete.
func dump[T any](f func() ([]T, error)) ([]T, error) {
	var err error
	for range 10 {
		var v []T
		v, err = f()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return v, err
		}
	}
	return nil, err
}

// Routes is the IPv4 main routing table, one route a line, sorted:
//
//	10.244.2.0/24 via 10.244.2.0 dev flannel.1 proto 252 onlink
//	198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.1
func (n *Namespace) Routes() ([]string, error) { return n.RoutesOf(netlink.FAMILY_V4) }

// RoutesOf is Routes for a family (netlink.FAMILY_V4 or FAMILY_V6).
func (n *Namespace) RoutesOf(family int) ([]string, error) {
	var rs []netlink.Route
	var names map[int]string
	err := n.withNetlink(func(nl *netlink.Handle) error {
		var err error
		rs, err = dump(func() ([]netlink.Route, error) {
			return nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		})
		if err != nil {
			return fmt.Errorf("%s: list routes: %w", n.Short, err)
		}
		names, err = n.linkNames(nl)
		return err
	})
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(rs))
	for _, r := range rs {
		lines = append(lines, formatRoute(r, names))
	}
	slices.Sort(lines)
	return lines, nil
}

// linkNames maps the namespace's link indexes to names; nl is its handle
// (see withNetlink).
func (n *Namespace) linkNames(nl *netlink.Handle) (map[int]string, error) {
	ls, err := dump(nl.LinkList)
	if err != nil {
		return nil, fmt.Errorf("%s: list links: %w", n.Short, err)
	}
	names := map[int]string{}
	for _, l := range ls {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	return names, nil
}

func linkName(names map[int]string, idx int) string {
	if s, ok := names[idx]; ok {
		return s
	}
	return fmt.Sprintf("if%d", idx)
}

var routeTypes = map[int]string{
	unix.RTN_LOCAL: "local", unix.RTN_BROADCAST: "broadcast", unix.RTN_BLACKHOLE: "blackhole",
	unix.RTN_UNREACHABLE: "unreachable", unix.RTN_PROHIBIT: "prohibit", unix.RTN_MULTICAST: "multicast",
}

var routeProtos = map[netlink.RouteProtocol]string{
	unix.RTPROT_KERNEL: "kernel", unix.RTPROT_BOOT: "boot", unix.RTPROT_STATIC: "static",
}

func formatRoute(r netlink.Route, names map[int]string) string {
	var f []string
	if t, ok := routeTypes[r.Type]; ok {
		f = append(f, t)
	}
	if r.Dst == nil || (r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) {
		f = append(f, "default")
	} else {
		f = append(f, r.Dst.String())
	}
	if r.Gw != nil {
		f = append(f, "via", r.Gw.String())
	}
	if r.LinkIndex > 0 {
		f = append(f, "dev", linkName(names, r.LinkIndex))
	}
	for _, nh := range r.MultiPath {
		f = append(f, "nexthop")
		if nh.Gw != nil {
			f = append(f, "via", nh.Gw.String())
		}
		f = append(f, "dev", linkName(names, nh.LinkIndex))
	}
	if p, ok := routeProtos[r.Protocol]; ok {
		f = append(f, "proto", p)
	} else {
		f = append(f, "proto", fmt.Sprint(int(r.Protocol)))
	}
	if r.Scope == netlink.SCOPE_LINK {
		f = append(f, "scope", "link")
	} else if r.Scope == netlink.SCOPE_HOST {
		f = append(f, "scope", "host")
	}
	if r.Src != nil {
		f = append(f, "src", r.Src.String())
	}
	if r.Priority != 0 {
		f = append(f, "metric", fmt.Sprint(r.Priority))
	}
	if r.Flags&unix.RTNH_F_ONLINK != 0 {
		f = append(f, "onlink")
	}
	if r.MTU != 0 {
		f = append(f, "mtu", fmt.Sprint(r.MTU))
	}
	return strings.Join(f, " ")
}

func isZeroMask(m []byte) bool {
	ones, _ := net.IPMask(m).Size()
	return ones == 0
}

// Neighbours is dev's IPv4 neighbour table, one entry a line, sorted:
//
//	10.244.2.0 lladdr 0a:58:0a:f4:02:00 PERMANENT
//	198.18.0.2 lladdr 02:c6:12:00:00:02 REACHABLE
func (n *Namespace) Neighbours(dev string) ([]string, error) {
	return n.NeighboursOf(dev, netlink.FAMILY_V4)
}

// NeighboursOf is Neighbours for a family (FAMILY_V4 or FAMILY_V6).
func (n *Namespace) NeighboursOf(dev string, family int) ([]string, error) {
	var ns []netlink.Neigh
	err := n.withNetlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Short, dev, err)
		}
		ns, err = dump(func() ([]netlink.Neigh, error) { return nl.NeighList(l.Attrs().Index, family) })
		if err != nil {
			return fmt.Errorf("%s: list neighbours of %s: %w", n.Short, dev, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(ns))
	for _, e := range ns {
		f := []string{e.IP.String()}
		if len(e.HardwareAddr) > 0 {
			f = append(f, "lladdr", e.HardwareAddr.String())
		}
		f = append(f, neighState(e.State))
		lines = append(lines, strings.Join(f, " "))
	}
	slices.Sort(lines)
	return lines, nil
}

func neighState(s int) string {
	var out []string
	for _, st := range []struct {
		bit  int
		name string
	}{
		{netlink.NUD_INCOMPLETE, "INCOMPLETE"}, {netlink.NUD_REACHABLE, "REACHABLE"},
		{netlink.NUD_STALE, "STALE"}, {netlink.NUD_DELAY, "DELAY"}, {netlink.NUD_PROBE, "PROBE"},
		{netlink.NUD_FAILED, "FAILED"}, {netlink.NUD_NOARP, "NOARP"}, {netlink.NUD_PERMANENT, "PERMANENT"},
	} {
		if s&st.bit != 0 {
			out = append(out, st.name)
		}
	}
	if len(out) == 0 {
		return "NONE"
	}
	return strings.Join(out, ",")
}

// FDB is dev's forwarding database (bridge fdb), one entry a line, sorted:
//
//	0a:58:0a:f4:02:00 dst 198.18.0.2 self permanent
func (n *Namespace) FDB(dev string) ([]string, error) {
	var es []netlink.Neigh
	var names map[int]string
	err := n.withNetlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Short, dev, err)
		}
		es, err = dump(func() ([]netlink.Neigh, error) { return nl.NeighList(l.Attrs().Index, unix.AF_BRIDGE) })
		if err != nil {
			return fmt.Errorf("%s: list fdb of %s: %w", n.Short, dev, err)
		}
		names, err = n.linkNames(nl)
		return err
	})
	if err != nil {
		return nil, err
	}
	lines := make([]string, 0, len(es))
	for _, e := range es {
		f := []string{e.HardwareAddr.String()}
		if e.IP != nil {
			f = append(f, "dst", e.IP.String())
		}
		if e.Vlan != 0 {
			f = append(f, "vlan", fmt.Sprint(e.Vlan))
		}
		if e.VNI != 0 {
			f = append(f, "vni", fmt.Sprint(e.VNI))
		}
		if e.Flags&netlink.NTF_SELF != 0 {
			f = append(f, "self")
		}
		if e.Flags&netlink.NTF_MASTER != 0 || e.MasterIndex != 0 {
			f = append(f, "master")
			if e.MasterIndex != 0 {
				f = append(f, linkName(names, e.MasterIndex))
			}
		}
		switch {
		case e.State&netlink.NUD_PERMANENT != 0:
			f = append(f, "permanent")
		case e.State&netlink.NUD_NOARP != 0:
			f = append(f, "static")
		case e.State&netlink.NUD_STALE != 0:
			f = append(f, "stale")
		}
		lines = append(lines, strings.Join(f, " "))
	}
	slices.Sort(lines)
	return lines, nil
}

// Addrs lists dev's addresses as prefixes ("10.244.5.0/32"), sorted,
// IPv4 first.
func (n *Namespace) Addrs(dev string) ([]netip.Prefix, error) {
	var as []netlink.Addr
	err := n.withNetlink(func(nl *netlink.Handle) error {
		l, err := nl.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("%s: link %s: %w", n.Short, dev, err)
		}
		as, err = dump(func() ([]netlink.Addr, error) { return nl.AddrList(l, netlink.FAMILY_ALL) })
		if err != nil {
			return fmt.Errorf("%s: list addresses of %s: %w", n.Short, dev, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		bits, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out, nil
}
