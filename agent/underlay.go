package agent

import (
	"fmt"
	"net/netip"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// underlayInNetwork is why ext, the external interface chosen by how
// (chooseExternalInterfaceIn), cannot be this host's underlay in the
// network c, or nil: its address, the public IP, or one of v6 (its IPv6
// addresses) lies in the cluster's Network or IPv6Network.
//
// An interface with an address of the cluster network is the overlay's own
// bridge (cni0, docker0 with --bip from subnet.env) or device, not the
// network the hosts share: taken (--iface=cni0 was accepted), the lease
// named 10.244.5.1 as the host's public IP, an address every host routes
// into the overlay, and no host reached this one. A --public-ip in the
// Network is the same mistake whatever the interface. The overlay's
// vxlan and TUN devices are refused before this (overlayDevice); the
// Network is known only once its config is read from etcd, so this is
// checked then.
func underlayInNetwork(c *subnet.Config, ext backend.ExternalInterface, how string, v6 []netip.Addr) error {
	name := "?"
	if ext.Iface != nil {
		name = ext.Iface.Name
	}
	const overlay = "an address of the overlay (the cluster network is what containers are numbered from, " +
		"and every host routes it into the overlay), not of the network the hosts share: no host could reach this one at it"
	const nameIt = "name the interface that connects the hosts with --iface (or --iface-regex, --iface-can-reach)"
	// in: a prefix that is not set (no IPv6Network) contains nothing.
	in := func(p netip.Prefix, a netip.Addr) bool { return p.IsValid() && p.Contains(a) }
	switch {
	case in(c.Network, ext.IfaceAddr):
		return fmt.Errorf("external interface %s (chosen by %s) has the address %s, inside the cluster Network %s: "+
			"it is a bridge or device of the overlay (cni0, docker0), not the underlay; its address would be this host's public IP, %s; %s",
			name, how, ext.IfaceAddr, c.Network, overlay, nameIt)
	case in(c.Network, ext.PublicIP):
		return fmt.Errorf("public IP %s (--public-ip; external interface %s, chosen by %s) is inside the cluster Network %s: it is %s; "+
			"give --public-ip the address the other hosts reach this host at", ext.PublicIP, name, how, c.Network, overlay)
	}
	if c.EnableIPv6 {
		for _, a := range v6 {
			if in(c.IPv6Network, a) {
				return fmt.Errorf("external interface %s (chosen by %s) has the address %s, inside the cluster IPv6Network %s: "+
					"it is a bridge or device of the overlay (cni0, docker0), not the underlay; %s", name, how, a, c.IPv6Network, nameIt)
			}
		}
	}
	return nil
}

// checkUnderlay is underlayInNetwork for the network c, with the IPv6
// addresses ext's interface has now in the agent's network namespace when
// c enables IPv6.
func checkUnderlay(c *subnet.Config, ext backend.ExternalInterface, how string) error {
	var v6 []netip.Addr
	if c.EnableIPv6 && ext.Iface != nil {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return fmt.Errorf("open netlink: %w", err)
		}
		defer h.Close()
		l, err := h.LinkByIndex(ext.Iface.Index)
		if err != nil {
			return fmt.Errorf("look up external interface %s (index %d): %w", ext.Iface.Name, ext.Iface.Index, err)
		}
		addrs, err := backend.ListAddrs(h, l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("list the IPv6 addresses of external interface %s: %w", ext.Iface.Name, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok {
				v6 = append(v6, ip)
			}
		}
	}
	return underlayInNetwork(c, ext, how, v6)
}
