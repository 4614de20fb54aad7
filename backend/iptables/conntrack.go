package iptables

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The nat table is consulted for a connection's first packet only; the
// conntrack entry it leaves applies its verdict, NAT or none, to every later
// packet of the flow. A flow a pod starts while our MASQUERADE is missing (a
// firewall's reload wiped it, or it is not installed yet at the agent's
// start) therefore keeps leaving with the pod's address after the rule is
// back, for as long as its entry lives: a UDP flow that keeps sending (QUIC,
// syslog, statsd, a VPN) refreshes it forever. No answer can reach a pod
// address from outside the cluster network, so such a flow has never
// worked; deleting its entry makes its next packet a new connection, which
// the restored rule masquerades.

// conntrackAttempts bounds how often DeleteUnmasqueraded reads the table
// again when the kernel reports that a read was interrupted.
const conntrackAttempts = 3

// DeleteUnmasqueraded deletes the conntrack entries of flows that
// MasqRules(network, …) masquerade, rule 3 (from the cluster network to
// anywhere else but multicast), and that left without source NAT: see
// unmasqueraded for exactly which. Call it right after the rules were
// written (Manager.Wrote("nat")): flows started since are masqueraded, so
// every such entry is one made while the rules were missing. It returns how
// many entries it deleted.
//
// h must be open for NETLINK_NETFILTER and NETLINK_ROUTE in the namespace
// whose rules were written. The cost is one read of the family's whole
// conntrack table (every entry is sent and parsed) and one request per
// entry deleted, so call it when the rules were written, not at every check.
func DeleteUnmasqueraded(h *netlink.Handle, network netip.Prefix) (int, error) {
	network = network.Masked()
	rtFamily, ctFamily := netlink.FAMILY_V4, netlink.InetFamily(unix.AF_INET)
	if FamilyOf(network) == IPv6 {
		rtFamily, ctFamily = netlink.FAMILY_V6, netlink.InetFamily(unix.AF_INET6)
	}
	routes, err := backend.ListRoutes(h, rtFamily, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return 0, fmt.Errorf("conntrack: this host's addresses: %w", err)
	}
	f := unmasqueraded{cluster: network}
	for _, r := range routes {
		if p, ok := backend.PrefixFromIPNet(r.Dst); ok {
			f.local = append(f.local, p)
		}
	}
	deleted := 0
	for range conntrackAttempts {
		// An interrupted read still deletes the entries it saw; the
		// next reads the table again for those it missed.
		n, err := h.ConntrackDeleteFilters(netlink.ConntrackTable, ctFamily, f)
		deleted += int(n)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			if err != nil {
				return deleted, fmt.Errorf("conntrack: delete the entries of flows that left %s unmasqueraded: %w", network, err)
			}
			return deleted, nil
		}
	}
	return deleted, fmt.Errorf("conntrack: the table's read was interrupted %d times in a row: %w", conntrackAttempts, netlink.ErrDumpInterrupted)
}

// unmasqueraded matches the conntrack entries of flows that left without
// the masquerade MasqRules would have given them:
//
//   - the original source is inside the cluster network;
//   - the destination the packets really went to, the reply's source (the
//     service endpoint for a flow kube-proxy DNATed), is outside it, not
//     multicast nor the limited broadcast, and not an address of this host
//     (its local routing table): traffic delivered here never passes nat
//     POSTROUTING, and a pod reaches the host's addresses without NAT;
//   - no source NAT was applied: the reply goes back to the original source
//     address and port. An entry that any rule (ours, kube-proxy's,
//     dockerd's) SNATed or masqueraded is left alone.
//
// Our chain first returns packets carrying kube-proxy's masquerade mark; a
// conntrack entry does not record a packet's mark, and needs not: the
// marked flows are those kube-proxy masquerades itself, whose entries show
// the source NAT, unless kube-proxy's nat rules were wiped as well, in which
// case neither its mark nor its DNAT applied and the flow, to a service
// address nothing outside answers, is as broken as the others.
type unmasqueraded struct {
	cluster netip.Prefix
	local   []netip.Prefix
}

var _ netlink.CustomConntrackFilter = unmasqueraded{}

var limitedBroadcast = netip.AddrFrom4([4]byte{255, 255, 255, 255})

func (u unmasqueraded) MatchConntrackFlow(f *netlink.ConntrackFlow) bool {
	src, ok1 := backend.AddrFromIP(f.Forward.SrcIP)
	dst, ok2 := backend.AddrFromIP(f.Reverse.SrcIP)
	back, ok3 := backend.AddrFromIP(f.Reverse.DstIP)
	switch {
	case !ok1 || !ok2 || !ok3:
		return false
	case !u.cluster.Contains(src) || u.cluster.Contains(dst):
		return false
	case back != src || f.Reverse.DstPort != f.Forward.SrcPort:
		return false
	case dst.IsMulticast() || dst == limitedBroadcast:
		return false
	}
	for _, p := range u.local {
		if p.Contains(dst) {
			return false
		}
	}
	return true
}
