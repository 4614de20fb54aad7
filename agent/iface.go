package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FindExternalInterface picks the underlay interface in the current network
// namespace, as the Config says:
//
//  1. each of Ifaces in order: an interface name, or an address held by some
//     interface; the first that exists and has an IPv4 address wins;
//  2. each of IfaceRegexes in order, matched first against the interfaces'
//     IPv4 addresses, then against their names, as flanneld matches them
//     (loopback is never matched);
//  3. IfaceCanReach: the interface the kernel routes that address through;
//  4. only when none of these is set: the interface that holds PublicIP, as
//     flanneld picks it (loopback aside, whose MTU is no underlay's), else
//     the interface of the default route (where flanneld refuses to start:
//     PublicIP is a NAT address). The agent then warns when the peers, or
//     etcd until the first peers appear, are routed through another
//     interface (warnDefaultRoute).
//
// When options are set and none of them finds an interface, the error names
// each one tried and the interfaces the host has; agentd never falls back to
// the default route behind an operator's back.
//
// A device of the overlay itself (overlayDevice: flannel.<VNI>, flannel0) is
// never the underlay: named or routed through, it is refused; regexes and
// PublicIP pass it by as they pass loopback. Taken, it made the vxlan backend
// delete the running flannel.1 (its address, the underlay's, was "wrong") and
// fail to create it over itself: a mistyped --iface cost the host its
// datapath.
//
// PublicIP is Config.PublicIP when set, else the chosen interface address.
func FindExternalInterface(cfg *Config) (backend.ExternalInterface, error) {
	ext, _, err := chooseExternalInterface(cfg)
	return ext, err
}

// chooseExternalInterface is FindExternalInterface, and which option chose
// the interface (chooseExternalInterfaceIn).
func chooseExternalInterface(cfg *Config) (backend.ExternalInterface, string, error) {
	h, err := netlink.NewHandle()
	if err != nil {
		return backend.ExternalInterface{}, "", fmt.Errorf("open netlink: %w", err)
	}
	defer h.Close()
	return chooseExternalInterfaceIn(h, cfg)
}

// chooseExternalInterfaceIn is FindExternalInterface in the namespace h is
// bound to, and which option chose the interface, as an error about the choice names it:
// "--iface=cni0", "--iface-regex=^cni", "--iface-can-reach=10.244.5.2",
// "--public-ip=10.244.5.1 (an address of cni0)", "the default route (no
// --iface)".
func chooseExternalInterfaceIn(h *netlink.Handle, cfg *Config) (backend.ExternalInterface, string, error) {
	ifs, err := listInterfaces(h)
	if err != nil {
		return backend.ExternalInterface{}, "", err
	}
	found := func(ifc *ifaceInfo, addr netip.Addr, how string) (backend.ExternalInterface, string, error) {
		ext := backend.ExternalInterface{Iface: ifc.netInterface(), IfaceAddr: addr, PublicIP: addr}
		if cfg.PublicIP.IsValid() {
			ext.PublicIP = cfg.PublicIP
		}
		return ext, how, nil
	}

	// tried describes each option that found nothing, for the error.
	var tried []string
	for _, spec := range cfg.Ifaces {
		if ip, err := netip.ParseAddr(spec); err == nil {
			ip = ip.Unmap()
			if ifc := ifaceWithAddr(ifs, ip); ifc != nil {
				if d := ifc.overlayDevice(); d != "" {
					tried = append(tried, fmt.Sprintf("--iface %q (an address of %s, %s)", spec, ifc.name, d))
					continue
				}
				return found(ifc, ip, "--iface="+spec)
			}
			tried = append(tried, fmt.Sprintf("--iface %q (no interface has that address%s)", spec, unreadable(ifs)))
			continue
		}
		ifc := ifaceNamed(ifs, spec)
		switch {
		case ifc == nil:
			tried = append(tried, fmt.Sprintf("--iface %q", spec))
		case ifc.addrErr != nil:
			tried = append(tried, fmt.Sprintf("--iface %q (its addresses could not be read: %v)", spec, ifc.addrErr))
		case ifc.overlayDevice() != "":
			tried = append(tried, fmt.Sprintf("--iface %q (%s)", spec, ifc.overlayDevice()))
		case len(ifc.addrs) == 0:
			tried = append(tried, fmt.Sprintf("--iface %q (has no IPv4 address)", spec))
		default:
			return found(ifc, ifc.addrs[0], "--iface="+spec)
		}
	}

	for _, re := range cfg.IfaceRegexes {
		for i := range ifs {
			ifc := &ifs[i]
			if ifc.loopback() || ifc.overlayDevice() != "" {
				continue
			}
			for _, a := range ifc.addrs {
				if re.MatchString(a.String()) {
					return found(ifc, a, "--iface-regex="+re.String())
				}
			}
		}
		var bare []string // names that matched but have no IPv4 address
		for i := range ifs {
			ifc := &ifs[i]
			if ifc.loopback() || ifc.overlayDevice() != "" || !re.MatchString(ifc.name) {
				continue
			}
			if len(ifc.addrs) == 0 {
				bare = append(bare, ifc.name)
				continue
			}
			return found(ifc, ifc.addrs[0], "--iface-regex="+re.String())
		}
		msg := fmt.Sprintf("--iface-regex %q", re.String())
		if len(bare) > 0 {
			msg += fmt.Sprintf(" (matches %s, without an IPv4 address%s)", strings.Join(bare, ", "), unreadable(ifs))
		} else if u := unreadable(ifs); u != "" {
			msg += " (" + strings.TrimPrefix(u, "; ") + ")"
		}
		tried = append(tried, msg)
	}

	if dst := cfg.IfaceCanReach; dst.IsValid() {
		routes, err := h.RouteGet(dst.AsSlice())
		switch {
		case err != nil:
			tried = append(tried, fmt.Sprintf("--iface-can-reach %s (%v)", dst, err))
		case len(routes) == 0:
			tried = append(tried, fmt.Sprintf("--iface-can-reach %s (no route)", dst))
		default:
			r := routes[0]
			ifc := ifaceIndexed(ifs, r.LinkIndex)
			switch {
			case ifc == nil:
				tried = append(tried, fmt.Sprintf("--iface-can-reach %s (routed through interface index %d, which is gone)", dst, r.LinkIndex))
			case ifc.overlayDevice() != "":
				tried = append(tried, fmt.Sprintf("--iface-can-reach %s (routed through %s, %s)", dst, ifc.name, ifc.overlayDevice()))
			case ifc.addrErr != nil:
				tried = append(tried, fmt.Sprintf("--iface-can-reach %s (routed through %s, whose addresses could not be read: %v)", dst, ifc.name, ifc.addrErr))
			case len(ifc.addrs) == 0:
				tried = append(tried, fmt.Sprintf("--iface-can-reach %s (routed through %s, which has no IPv4 address)", dst, ifc.name))
			default:
				return found(ifc, ifc.preferred(r.Src), fmt.Sprintf("--iface-can-reach=%s", dst))
			}
		}
	}

	if len(tried) > 0 {
		return backend.ExternalInterface{}, "", fmt.Errorf("no interface matches %s (have: %s)", strings.Join(tried, ", "), describeInterfaces(ifs))
	}
	if ifc := ifaceWithAddr(ifs, cfg.PublicIP); ifc != nil && !ifc.loopback() && ifc.overlayDevice() == "" {
		return found(ifc, cfg.PublicIP, fmt.Sprintf("--public-ip=%s (an address of %s)", cfg.PublicIP, ifc.name))
	}
	return defaultRouteInterface(h, ifs, found)
}

// defaultRouteInterface is the interface of the main table's IPv4 default
// route with the lowest metric.
func defaultRouteInterface(h *netlink.Handle, ifs []ifaceInfo, found func(*ifaceInfo, netip.Addr, string) (backend.ExternalInterface, string, error)) (backend.ExternalInterface, string, error) {
	routes, err := backend.ListRoutes(h, netlink.FAMILY_V4, nil, 0)
	if err != nil {
		return backend.ExternalInterface{}, "", err
	}
	var best *netlink.Route
	for i := range routes {
		r := &routes[i]
		if r.Dst != nil && !r.Dst.IP.IsUnspecified() {
			continue
		}
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		if best == nil || r.Priority < best.Priority {
			best = r
		}
	}
	if best == nil {
		return backend.ExternalInterface{}, "", fmt.Errorf("no IPv4 default route; name the underlay with --iface, --iface-regex or --iface-can-reach (have: %s)", describeInterfaces(ifs))
	}
	index := best.LinkIndex
	if index == 0 && len(best.MultiPath) > 0 {
		index = best.MultiPath[0].LinkIndex
	}
	ifc := ifaceIndexed(ifs, index)
	switch {
	case ifc == nil:
		return backend.ExternalInterface{}, "", fmt.Errorf("the default route uses interface index %d, which is gone", index)
	case ifc.overlayDevice() != "":
		return backend.ExternalInterface{}, "", fmt.Errorf("the default route uses %s, %s; name the underlay with --iface (have: %s)", ifc.name, ifc.overlayDevice(), describeInterfaces(ifs))
	case ifc.addrErr != nil:
		return backend.ExternalInterface{}, "", fmt.Errorf("the default route uses %s, whose IPv4 addresses could not be read: %w", ifc.name, ifc.addrErr)
	case len(ifc.addrs) == 0:
		return backend.ExternalInterface{}, "", fmt.Errorf("the default route uses %s, which has no IPv4 address; name the underlay with --iface (have: %s)", ifc.name, describeInterfaces(ifs))
	}
	return found(ifc, ifc.preferred(best.Src), "the default route (no --iface)")
}

// errExternalInterfaceChanged is wrapped by the error that ends the agent
// when the external interface it started with is no longer the same link.
var errExternalInterfaceChanged = errors.New("external interface changed")

// checkExternal is a reconcile pass's look at the external interface ext in
// h's namespace. It reads the link with ext's index once (an RTM_GETLINK):
// underlay is given its state, whatever the link's name now, and
// checkExternalInterface judges it; a failure to read it is
// checkExternalInterface's to say. Before 2026-12-07 each of the two read
// it itself.
func checkExternal(h *netlink.Handle, ext backend.ExternalInterface, underlay *underlayWatch) error {
	l, err := h.LinkByIndex(ext.Iface.Index)
	if err == nil {
		underlay.found(ext.Iface.Name, l.Attrs())
	}
	return checkExternalInterface(h, ext, l, err)
}

// checkExternalInterface reports whether ext, the external interface found
// at start, is still the link the backends use and still has the address
// found on it.
//
// The link: the link with its index exists and has its name, however the
// interface was given (name, address, regex, can-reach or default route).
// The backends name the underlay by index (the vxlan device's lower device,
// host-gw's and DirectRouting's routes), so an interface deleted and made
// again with the same name and address (netplan apply, NetworkManager
// rebuilding a bond or VLAN) is another link to them, and every pass would
// fail; the error then wraps errExternalInterfaceChanged and says what
// became of the name. An interface that is down is still the same link.
//
// The address: vxlan sends from it, and unless --public-ip says otherwise
// it is the public IP our lease names, which every peer sends to. When it
// is gone (the host renumbered by DHCP, or an operator's ip addr del) the
// error says so and what the interface has now; it does not end the agent,
// since an address may come back (a DHCP client that deletes and re-adds
// it) and a restart for a new one moves the host to another subnet, which
// is the operator's call. The pass fails, is logged and retried, and the
// next pass that finds the address succeeds again.
//
// l and err are what reading the link with ext's index returned
// (checkExternal reads it); err other than not-found is netlink's, not a
// change. While nothing changed it costs one more request, an RTM_GETADDR.
func checkExternalInterface(h *netlink.Handle, ext backend.ExternalInterface, l netlink.Link, err error) error {
	iface := ext.Iface
	switch {
	case err == nil && l.Attrs().Name == iface.Name:
		return checkExternalAddress(h, l, ext)
	case err != nil && !backend.IsNotFound(err):
		return fmt.Errorf("look up external interface %s (index %d): %w", iface.Name, iface.Index, err)
	}
	was := fmt.Sprintf("index %d", iface.Index)
	if err == nil {
		was += ", renamed " + l.Attrs().Name
	}
	now := "gone"
	switch l, err := backend.LinkByName(h, iface.Name); {
	case err != nil:
		now = "unknown (" + err.Error() + ")"
	case l != nil:
		now = fmt.Sprintf("index %d", l.Attrs().Index)
	}
	return fmt.Errorf("%w: %s was %s, now %s; the datapath is bound to the old index (the vxlan device's underlay, host-gw routes) "+
		"and agentd does not move it while it runs: exiting, a restart selects the interface again",
		errExternalInterfaceChanged, iface.Name, was, now)
}

// checkExternalAddress is checkExternalInterface's address check, on l, the
// external link.
func checkExternalAddress(h *netlink.Handle, l netlink.Link, ext backend.ExternalInterface) error {
	addrs, err := backend.ListAddrs(h, l, netlink.FAMILY_V4)
	if err != nil {
		return fmt.Errorf("list the addresses of external interface %s: %w", ext.Iface.Name, err)
	}
	var has []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if ok && ip.Unmap() == ext.IfaceAddr {
			return nil
		}
		has = append(has, a.IPNet.String())
	}
	now := "no IPv4 address"
	if len(has) > 0 {
		now = strings.Join(has, ", ")
	}
	advertised := fmt.Sprintf("our lease names %s as this host's public IP, so peers send to an address this host no longer has", ext.PublicIP)
	if ext.PublicIP != ext.IfaceAddr {
		advertised = fmt.Sprintf("peers send to the public IP %s (--public-ip), and a vxlan device sends from the lost address", ext.PublicIP)
	}
	return fmt.Errorf("external address %s is no longer on %s (it has %s): %s; "+
		"if it does not come back, restart agentd to use the interface's new address (with a new public IP the host leases another subnet: drain it first)",
		ext.IfaceAddr, ext.Iface.Name, now, advertised)
}

// ifaceInfo is one interface and its IPv4 addresses, the best first, or
// why they could not be read (addrErr).
type ifaceInfo struct {
	attrs   netlink.LinkAttrs
	kind    string // netlink.Link's Type: "veth", "vxlan", "tuntap"…
	name    string
	addrs   []netip.Addr
	addrErr error
}

func (i *ifaceInfo) loopback() bool { return i.attrs.Flags&net.FlagLoopback != 0 }

// overlayDevice says why the interface is no underlay when it is a device of
// the overlay, agentd's or flanneld's: the vxlan backend's flannel.<VNI> or
// the udp backend's TUN flannel0 (each holds an address of its host's
// subnet); "" for any other interface.
func (i *ifaceInfo) overlayDevice() string {
	switch {
	case i.kind == "vxlan" && strings.HasPrefix(i.name, "flannel."):
		return "the overlay's vxlan device, not an underlay"
	case i.kind == "tuntap" && i.name == "flannel0":
		return "the overlay's TUN device, not an underlay"
	}
	return ""
}

// preferred is src when the interface holds it (the kernel's preferred source
// for a route), else the interface's best address.
func (i *ifaceInfo) preferred(src net.IP) netip.Addr {
	if a, ok := netip.AddrFromSlice(src); ok && slices.Contains(i.addrs, a.Unmap()) {
		return a.Unmap()
	}
	return i.addrs[0]
}

// netInterface is built from the netlink attributes rather than looked up
// with package net, which would ask the calling thread's namespace rather than
// the one the handle is bound to.
func (i *ifaceInfo) netInterface() *net.Interface {
	return &net.Interface{
		Index:        i.attrs.Index,
		MTU:          i.attrs.MTU,
		Name:         i.attrs.Name,
		HardwareAddr: i.attrs.HardwareAddr,
		Flags:        i.attrs.Flags,
	}
}

// listInterfaces returns every interface, ordered by index, with its IPv4
// addresses ordered primary global ones first. Each link's addresses are
// read alone where the kernel can (backend.ListAddrsByLink): on a node whose
// kube-ipvs0 holds thousands of Service addresses that churn, a dump of
// every address is interrupted again and again, and agentd could not start;
// a link whose own dump fails has addrErr, and matters only if chosen.
func listInterfaces(h *netlink.Handle) ([]ifaceInfo, error) {
	links, err := backend.ListLinks(h)
	if err != nil {
		return nil, err
	}
	byLinkAll, errs, err := backend.ListAddrsByLink(h, links, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	// rank orders an interface's addresses: primary before secondary (the
	// kernel's choice of source), global unicast before link-local/loopback.
	rank := func(a netlink.Addr) int {
		r := 0
		if a.Flags&unix.IFA_F_SECONDARY != 0 {
			r++
		}
		if !a.IP.IsGlobalUnicast() {
			r += 2
		}
		return r
	}
	ifs := make([]ifaceInfo, 0, len(links))
	for _, l := range links {
		attrs := *l.Attrs()
		var la []netlink.Addr
		for _, a := range byLinkAll[attrs.Index] {
			if a.IPNet != nil && a.IP.To4() != nil {
				la = append(la, a)
			}
		}
		slices.SortStableFunc(la, func(a, b netlink.Addr) int { return cmp.Compare(rank(a), rank(b)) })
		info := ifaceInfo{attrs: attrs, kind: l.Type(), name: attrs.Name, addrErr: errs[attrs.Index]}
		for _, a := range la {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				info.addrs = append(info.addrs, ip)
			}
		}
		ifs = append(ifs, info)
	}
	slices.SortFunc(ifs, func(a, b ifaceInfo) int { return cmp.Compare(a.attrs.Index, b.attrs.Index) })
	return ifs, nil
}

func ifaceNamed(ifs []ifaceInfo, name string) *ifaceInfo {
	for i := range ifs {
		if ifs[i].name == name {
			return &ifs[i]
		}
	}
	return nil
}

func ifaceIndexed(ifs []ifaceInfo, index int) *ifaceInfo {
	for i := range ifs {
		if ifs[i].attrs.Index == index {
			return &ifs[i]
		}
	}
	return nil
}

func ifaceWithAddr(ifs []ifaceInfo, ip netip.Addr) *ifaceInfo {
	for i := range ifs {
		if slices.Contains(ifs[i].addrs, ip) {
			return &ifs[i]
		}
	}
	return nil
}

// unreadable is "; the addresses of <names> could not be read: <first
// error>" for the interfaces whose addresses could not be read, or "".
func unreadable(ifs []ifaceInfo) string {
	var names []string
	var first error
	for _, ifc := range ifs {
		if ifc.addrErr != nil {
			names = append(names, ifc.name)
			first = cmp.Or(first, ifc.addrErr)
		}
	}
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf("; the addresses of %s could not be read: %v", strings.Join(names, ", "), first)
}

// describeInterfaces lists the interfaces for an error: "eth0 198.18.0.1, eth1".
// The list is the candidates for the underlay, so the overlay's own devices
// (overlayDevice), which are never taken, are left out, and so is loopback:
// no peer can reach its addresses, and only --iface naming it (a single-host
// test) takes it. With nothing else to list it says what it left out: "no
// interfaces but loopback lo and the overlay's flannel.1".
func describeInterfaces(ifs []ifaceInfo) string {
	parts := make([]string, 0, len(ifs))
	var loopback, overlay []string
	for _, ifc := range ifs {
		switch {
		case ifc.loopback():
			loopback = append(loopback, ifc.name)
			continue
		case ifc.overlayDevice() != "":
			overlay = append(overlay, ifc.name)
			continue
		}
		s := ifc.name
		if ifc.addrErr != nil {
			s += " (addresses unreadable)"
		}
		for _, a := range ifc.addrs {
			s += " " + a.String()
		}
		parts = append(parts, s)
	}
	if len(parts) > 0 {
		return strings.Join(parts, ", ")
	}
	var left []string
	if len(loopback) > 0 {
		left = append(left, "loopback "+strings.Join(loopback, ", "))
	}
	if len(overlay) > 0 {
		left = append(left, "the overlay's "+strings.Join(overlay, ", "))
	}
	if len(left) == 0 {
		return "no interfaces"
	}
	return "no interfaces but " + strings.Join(left, " and ")
}

// The default route's interface, which FindExternalInterface takes when no
// flag names the underlay (as flanneld does), is on many multi-homed hosts
// a NAT or public NIC, while the hosts share another network. The lease
// then names an address the other hosts cannot reach, yet the host turns
// ready and programs every peer, and nothing says why its containers reach
// no other host. So once the first peer snapshot is in, the agent asks the
// kernel how it routes the hosts it talks to, and warns (once; the choice
// itself stays flanneld's) when they are routed through another interface.
// The first host of a cluster has no peer to ask about, only etcd, which may
// sit on a management network: warned from etcd's route, it asks once more
// when its first peers appear, and their verdict replaces etcd's.

// firstPeersPoll is how often a host that found no peer at the first
// snapshot looks for its first ones. PeersChanged has one reader, the
// reconcile loop, whose wake-ups must not be taken; Peers is a snapshot
// under a lock, cheap to read.
const firstPeersPoll = time.Second

// maxWarnPeers bounds the peers' public IPs whose route is asked for (one
// RTM_GETROUTE each, once): the first by lease key.
const maxWarnPeers = 256

// ifaceLeftToDefaultRoute reports whether the external interface was the
// default route's choice: none of --iface, --iface-regex, --iface-can-reach
// and --public-ip was given. An interface chosen because it holds
// --public-ip was named by the operator.
func ifaceLeftToDefaultRoute(cfg *Config) bool {
	return len(cfg.Ifaces) == 0 && len(cfg.IfaceRegexes) == 0 && !cfg.IfaceCanReach.IsValid() && !cfg.PublicIP.IsValid()
}

// addrRoute is how the kernel routes addr: through the interface named
// iface, or to this host itself (local: one of its own addresses, or
// through loopback).
type addrRoute struct {
	addr  netip.Addr
	iface string
	local bool
}

// routesTo asks the kernel, in the namespace h is bound to, how it routes
// each of addrs, sent from src when it is valid (as the rules of a host with
// policy routing see them); an address it has no route to is left out.
func routesTo(h *netlink.Handle, src netip.Addr, addrs []netip.Addr) ([]addrRoute, error) {
	ifs, err := listInterfaces(h)
	if err != nil {
		return nil, err
	}
	var opts netlink.RouteGetOptions
	if src.IsValid() {
		opts.SrcAddr = src.AsSlice()
	}
	var out []addrRoute
	for _, a := range addrs {
		routes, err := h.RouteGetWithOptions(a.AsSlice(), &opts)
		if err != nil || len(routes) == 0 {
			continue // unreachable, or no route: not evidence either way
		}
		r := routes[0]
		ifc := ifaceIndexed(ifs, r.LinkIndex)
		switch {
		case r.Type == unix.RTN_LOCAL || ifc != nil && ifc.loopback():
			out = append(out, addrRoute{addr: a, local: true})
		case ifc != nil:
			out = append(out, addrRoute{addr: a, iface: ifc.name})
		}
	}
	return out, nil
}

// defaultRouteWarning is why iface, the default route's interface chosen
// with no flag naming the underlay, may not be on the network the hosts
// share, or "" when nothing says so.
//
// The peers' public IPs decide when there are any: more than half of them
// routed through one other interface. Hosts that reach each other through
// the default route (one network, or several routed by the default
// gateway) are routed through iface, and then nothing is said, whatever
// etcd's route (etcd on a management network is not where the hosts
// meet). With no peer yet (the first host), etcd's addresses decide: every
// one routed through the same other interface; the warning then says it
// may be wrong. etcd on this host (loopback, or one of its addresses)
// tells nothing.
func defaultRouteWarning(iface string, peers, etcd []addrRoute) string {
	// other is the interface other than iface that most of the routes
	// not local go through, how many do, out of how many, and the first
	// address routed through it.
	other := func(routes []addrRoute) (name string, n, of int, example netip.Addr) {
		count := make(map[string]int)
		for _, r := range routes {
			if r.local {
				continue
			}
			of++
			if r.iface == iface {
				continue
			}
			count[r.iface]++
			if c := count[r.iface]; c > n || c == n && r.iface < name {
				name, n = r.iface, c
			}
		}
		for _, r := range routes {
			if n > 0 && !r.local && r.iface == name {
				return name, n, of, r.addr
			}
		}
		return name, n, of, example
	}
	if len(peers) > 0 {
		// Peers whose public IP is this host's own (hosts behind one
		// NAT address) tell nothing of the route.
		name, n, of, peer := other(peers)
		if 2*n <= of {
			return ""
		}
		return fmt.Sprintf("%s was chosen as the default route's interface (no --iface), but %d of %d peers' public IPs are routed through %s, "+
			"so the hosts likely share %s's network: if this host's containers reach no other host, restart agentd with --iface=%s or --iface-can-reach=%s",
			iface, n, of, name, name, name, peer)
	}
	name, n, of, ep := other(etcd)
	if of == 0 || n < of {
		return ""
	}
	return fmt.Sprintf("%s was chosen as the default route's interface (no --iface), but etcd (%s) is routed through %s, and no peer's route tells more: "+
		"if the hosts share %s's network, restart agentd with --iface=%s or --iface-can-reach=%s, or this host's containers will reach no other host",
		iface, ep, name, name, name, ep)
}

// checkDefaultRoute is defaultRouteWarning for the peers' public IPs and
// etcd's addresses, routed as the kernel routes them in the namespace h is
// bound to. The peers' are asked from src, iface's address, which the
// encapsulated packets leave from: on a host whose rules route by source
// (a table per NIC, as amazon-ec2-net-utils sets up), the main table's
// answer is not their route. etcd's are asked with no source, as the etcd
// client's connections leave.
func checkDefaultRoute(h *netlink.Handle, iface string, src netip.Addr, peers, etcd []netip.Addr) (string, error) {
	pr, err := routesTo(h, src, peers)
	if err != nil {
		return "", err
	}
	er, err := routesTo(h, netip.Addr{}, etcd)
	if err != nil {
		return "", err
	}
	return defaultRouteWarning(iface, pr, er), nil
}

// warnDefaultRoute waits for the first peer snapshot, then logs, and
// /status says (interfaceWarning), when the default route's interface ext
// may not be on the network the hosts share (defaultRouteWarning). With no
// peer at that snapshot, etcd's routes decided: when they warned, it asks
// once more when the first peers appear, and the peers' verdict replaces
// etcd's, the warning withdrawn or another given; later changes of the peers are not judged
// (the warning is a hint at start, not a monitor). It is run only when
// ifaceLeftToDefaultRoute.
func (a *agent) warnDefaultRoute(ctx context.Context, ext backend.ExternalInterface, leases leaseSource) {
	select {
	case <-ctx.Done():
		return
	case <-leases.PeersSynced():
	}
	peers := peerAddrs(leases.Peers())
	etcd := etcdAddrs(ctx, a.cfg.EtcdEndpoints)
	fromEtcd := a.judgeDefaultRoute(ext, peers, etcd, "")
	// Only a warning from etcd's route is judged again: a peerless host
	// that was not warned (most often etcd on this host, or a cluster of
	// one) polls for nothing.
	if len(peers) > 0 || fromEtcd == "" {
		return
	}
	t := time.NewTicker(firstPeersPoll)
	defer t.Stop()
	for len(peers) == 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		peers = peerAddrs(leases.Peers())
	}
	a.judgeDefaultRoute(ext, peers, etcd, fromEtcd)
}

// judgeDefaultRoute asks the kernel how it routes peers and etcd
// (checkDefaultRoute) and returns the warning, which it logs and /status
// shows. prev is the warning given before, which the new verdict replaces:
// when there is none now, the line says prev no longer holds and /status
// drops it. When the routes cannot be asked, prev stays.
func (a *agent) judgeDefaultRoute(ext backend.ExternalInterface, peers, etcd []netip.Addr, prev string) string {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		a.log.V(2).Info("cannot check the routes to the peers and etcd", "err", err)
		return prev
	}
	defer h.Close()
	warning, err := checkDefaultRoute(h, ext.Iface.Name, ext.IfaceAddr, peers, etcd)
	switch {
	case err != nil:
		a.log.V(2).Info("cannot check the routes to the peers and etcd", "err", err)
		return prev
	case warning == prev:
		// The peers told nothing (no route to them), and etcd
		// decided again: said already.
		return prev
	case warning != "":
		a.log.Info("the default route's interface may not be on the network the hosts share", "iface", ext.Iface.Name, "publicIP", ext.PublicIP, "reason", warning)
	case prev != "":
		a.log.Info("the first peers' public IPs are not routed through another interface: the warning judged from etcd's route no longer holds", "iface", ext.Iface.Name, "peers", len(peers))
	}
	a.obs.interfaceWarning(warning)
	return warning
}

// peerAddrs is the distinct public IPs of the first maxWarnPeers peers.
func peerAddrs(leases []subnet.Lease) []netip.Addr {
	var out []netip.Addr
	for _, l := range leases {
		ip := l.Attrs.PublicIP
		if ip.IsValid() && !slices.Contains(out, ip) {
			out = append(out, ip)
			if len(out) == maxWarnPeers {
				break
			}
		}
	}
	return out
}

// etcdAddrs is the addresses of the TCP endpoints among endpoints, a host
// name resolved (within 5 s; one that does not resolve is left out).
func etcdAddrs(ctx context.Context, endpoints []string) []netip.Addr {
	var out []netip.Addr
	for _, ep := range endpoints {
		network, addr, _, err := endpointAddr(ep)
		if err != nil || network != "tcp" {
			continue
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			out = append(out, ip.Unmap())
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ips, _ := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		for _, ip := range ips {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// interfaceWarning records why the external interface may be the wrong one
// (warnDefaultRoute).
func (o *observer) interfaceWarning(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.InterfaceWarning = why
}
