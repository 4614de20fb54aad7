package agent

import (
	"net/netip"
	"slices"

	"github.com/agentd/agentd/backend"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
)

// dockerBridge is the bridge dockerd numbers its containers from: --bip
// (agentd's subnet.env, through agentd-docker-opts) gives it this host's
// subnet, and without it dockerd gives it 172.17.0.1/16 or the first free
// private network. dockerd takes no --bip beside -b, so a bridge of another
// name is not one --bip could have numbered.
const dockerBridge = "docker0"

// dockerOutsideMsg is logged when dockerBridge has containers attached on
// addresses outside the cluster network while no interface has this host's
// subnet; dockerInsideMsg when that ends.
const (
	dockerOutsideMsg = "docker0 has containers attached, and addresses outside the cluster network while no interface has this host's subnet: " +
		"dockerd was started without --bip from this host's subnet.env, so its containers are not on the overlay: no other host routes their addresses back to them, " +
		"and their traffic to other hosts leaves masqueraded as this host, or not at all; " +
		"start dockerd with --bip and --mtu from subnet.env (the drop-in dist/systemd/docker.service.d/agentd.conf, README Docker), " +
		"stop its containers (docker stop $(docker ps -q)), then restart docker"
	dockerInsideMsg = "docker0 no longer has containers attached outside the cluster network while no interface has this host's subnet"
)

// dockerBridgeOutside reports whether a docker0 with addrs (its IPv4
// addresses) and ports interfaces attached is dockerd's bridge numbered
// without this host's subnet while containers use it: it has containers, an
// IPv4 address, and none in network (the cluster Network), and subnetDev,
// the interface holding this host's subnet (subnetHolder), is none.
//
// What is left out, and why:
//   - no ports: a host whose containers are not Docker's (containerd's
//     Kubernetes node) often has dockerd's unused docker0 at 172.17.0.1/16;
//     nothing uses it;
//   - another interface has the subnet (cni0, the CNI plugin's bridge): the
//     host's containers are CNI's, and a dockerd beside them must not take
//     the same subnet (README, Docker), so its own is deliberate;
//   - an address inside Network: docker0 at another host's subnet (an old
//     lease, kept by live-restore) is backend.ShadowLog's to say, with what
//     it routes; at this host's it is as it should be.
func dockerBridgeOutside(addrs []netip.Prefix, ports int, network netip.Prefix, subnetDev string) bool {
	if ports == 0 || len(addrs) == 0 || subnetDev != "" {
		return false
	}
	return !slices.ContainsFunc(addrs, func(a netip.Prefix) bool { return network.Contains(a.Addr()) })
}

// subnetHolder names the interface holding this host's subnet own: the one
// the kernel routes own's second address through directly
// (subnetInterface), if it has an IPv4 address in own whose prefix covers
// all of own (a bridge at its .1/24); else "". An interface routing own
// without such an address is not a holder: the udp backend's flannel0 has
// own's .0/32, and its route for the whole Network also covers own.
func subnetHolder(h *netlink.Handle, own netip.Prefix) string {
	name := subnetInterface(h, own)
	if name == "" {
		return ""
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return ""
	}
	as, _ := backend.ListAddrs(h, l, netlink.FAMILY_V4)
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		bits, _ := a.Mask.Size()
		if ok && own.Contains(ip) && bits <= own.Bits() {
			return name
		}
	}
	return ""
}

// dockerBridgeWatch says, once when it starts and once when it ends, that
// docker0 has containers outside the cluster network
// (dockerBridgeOutside). The reconcile goroutine alone calls check, at each
// pass: a few netlink reads. A container's veth attached or detached, or
// dockerd restarted, is seen at the next pass (the resync interval), soon
// enough for a line about how dockerd was started.
//
// It changes nothing and does not make the agent unready: docker0 and its
// containers are dockerd's, and only a restart of dockerd with --bip mends
// them.
type dockerBridgeWatch struct {
	log logr.Logger
	// outside is what the last check found.
	outside bool
}

// check reads docker0 in h's namespace and logs a change. network is the
// cluster Network, own this host's lease. A docker0 that is not there, or
// that cannot be read, is not outside: what this feeds is advice.
func (w *dockerBridgeWatch) check(h *netlink.Handle, network, own netip.Prefix) {
	if !own.IsValid() {
		return // no lease held: nothing to compare with
	}
	// The reads cheapest first: most hosts stop at one of the first two
	// (no docker0; docker0 unused at 172.17.0.1/16 beside cni0), and only a
	// docker0 that could be outside costs a dump of every link.
	var addrs []netip.Prefix
	ports, subnetDev := 0, ""
	l, err := h.LinkByName(dockerBridge)
	if br, ok := l.(*netlink.Bridge); err == nil && ok {
		as, _ := backend.ListAddrs(h, br, netlink.FAMILY_V4)
		for _, a := range as {
			if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
				bits, _ := a.Mask.Size()
				addrs = append(addrs, netip.PrefixFrom(ip, bits))
			}
		}
		if dockerBridgeOutside(addrs, 1, network, "") {
			subnetDev = subnetHolder(h, own)
		}
		if dockerBridgeOutside(addrs, 1, network, subnetDev) {
			links, _ := backend.ListLinks(h)
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Index {
					ports++
				}
			}
		}
	}
	outside := dockerBridgeOutside(addrs, ports, network, subnetDev)
	switch {
	case outside == w.outside:
	case outside:
		w.log.Info(dockerOutsideMsg, "bridge", dockerBridge, "addrs", addrs, "ports", ports, "network", network, "subnet", hostOne(own))
	default:
		w.log.Info(dockerInsideMsg, "bridge", dockerBridge, "addrs", addrs, "ports", ports, "subnetInterface", subnetDev)
	}
	w.outside = outside
}
