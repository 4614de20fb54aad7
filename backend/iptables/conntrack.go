package iptables

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
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
// written, or found put back by another program (Manager.Gap("nat")): flows
// started since are masqueraded, so every such entry is one made while the
// rules were missing. It returns how many entries it deleted.
//
// It works in the network namespace ns (netns.None(): this thread's). The
// cost is one read of the family's whole conntrack table (every entry is
// sent and parsed) and one request per entry deleted, so call it then, not
// at every check. Once ctx is done it stops, in the
// middle of a read or of the deletes (their socket is closed), and returns
// ctx's error with what it had deleted: a stop need not wait for a long
// table.
func DeleteUnmasqueraded(ctx context.Context, ns netns.NsHandle, network netip.Prefix) (int, error) {
	network = network.Masked()
	rtFamily, ctFamily := netlink.FAMILY_V4, uint8(unix.AF_INET)
	if FamilyOf(network) == IPv6 {
		rtFamily, ctFamily = netlink.FAMILY_V6, uint8(unix.AF_INET6)
	}
	f := unmasqueraded{cluster: network}
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return 0, fmt.Errorf("conntrack: this host's addresses: %w", err)
	}
	routes, err := backend.ListRoutes(h, rtFamily, &netlink.Route{Table: unix.RT_TABLE_LOCAL}, netlink.RT_FILTER_TABLE)
	h.Close()
	if err != nil {
		return 0, fmt.Errorf("conntrack: this host's addresses: %w", err)
	}
	for _, r := range routes {
		if p, ok := backend.PrefixFromIPNet(r.Dst); ok {
			f.local = append(f.local, p)
		}
	}
	c, err := openCT(ns, ctFamily)
	if err != nil {
		return 0, fmt.Errorf("conntrack: open netlink: %w", err)
	}
	s := c.s
	// Closing the socket ends a read waiting on it; the kernel drops
	// the rest of the dump with it.
	stop := context.AfterFunc(ctx, s.Close)
	defer func() {
		if stop() {
			s.Close()
		}
	}()
	deleted := 0
	for range conntrackAttempts {
		// An interrupted read still deletes the entries it saw; the
		// next reads the table again for those it missed.
		entries, err := c.list(f)
		n, derr := c.delete(entries)
		deleted += n
		switch {
		case ctx.Err() != nil:
			return deleted, ctx.Err()
		case err == nil && derr == nil:
			return deleted, nil
		case !errors.Is(err, netlink.ErrDumpInterrupted):
			return deleted, fmt.Errorf("conntrack: delete the entries of flows that left %s unmasqueraded: %w", network, errors.Join(err, derr))
		}
	}
	return deleted, fmt.Errorf("conntrack: the table's read was interrupted %d times in a row: %w", conntrackAttempts, netlink.ErrDumpInterrupted)
}

// ctSocket reads and deletes conntrack entries of one family on a netlink
// socket of its own, which DeleteUnmasqueraded closes to stop it: the
// netlink package's conntrack calls share theirs and cannot be stopped.
type ctSocket struct {
	s      *nl.NetlinkSocket
	pid    uint32
	family uint8
}

// openCT opens a ctSocket for family in the network namespace ns, with
// NETLINK_EXT_ACK on (Linux 4.12): the kernel then gives its reason with a
// refusal, which exchange puts after the errno (backend.KernelError), as
// agentd's route netlink errors have it. nfnetlink gives one for a request
// its attribute policy refuses ("numerical result out of range: Attribute
// failed policy validation"); it gives none for the refusals of our
// requests seen so far (an entry gone, ENOENT; no CAP_NET_ADMIN, EPERM;
// an unknown family or message), which stay the errno alone, as they are
// on a kernel without the option.
func openCT(ns netns.NsHandle, family uint8) (*ctSocket, error) {
	s, err := nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, err
	}
	_ = s.SetExtAck(true) // without, errors carry the errno alone
	pid, err := s.GetPid()
	if err != nil {
		s.Close()
		return nil, err
	}
	return &ctSocket{s: s, pid: pid, family: family}, nil
}

// list reads the whole table and returns the entries (their netlink
// messages' data) that f matches. A read the kernel marked interrupted (the
// table changed under it) returns what it read and netlink.ErrDumpInterrupted.
func (c *ctSocket) list(f netlink.CustomConntrackFilter) ([][]byte, error) {
	req := c.request(nl.IPCTNL_MSG_CT_GET, unix.NLM_F_DUMP)
	var entries [][]byte
	interrupted := false
	err := c.exchange(req, func(m syscall.NetlinkMessage) {
		if m.Header.Flags&unix.NLM_F_DUMP_INTR != 0 {
			interrupted = true
		}
		// A copy: m.Data shares the array of its whole datagram, some 90
		// entries, which a few kept entries would otherwise keep each.
		if flow, ok := parseConntrack(m.Data); ok && f.MatchConntrackFlow(flow) {
			entries = append(entries, slices.Clone(m.Data))
		}
	})
	if err == nil && interrupted {
		err = netlink.ErrDumpInterrupted
	}
	return entries, err
}

// delete deletes entries, as list returned them, one request each; one
// gone already counts as deleted. It stops at the first error.
func (c *ctSocket) delete(entries [][]byte) (int, error) {
	for i, e := range entries {
		req := c.request(nl.IPCTNL_MSG_CT_DELETE, unix.NLM_F_ACK)
		// The entry's attributes, its tuples and ID among them: the
		// kernel deletes that entry, not a new one of the same tuple.
		req.AddRawData(e[nl.SizeofNfgenmsg:])
		if err := c.exchange(req, nil); err != nil && !errors.Is(err, unix.ENOENT) {
			return i, err
		}
	}
	return len(entries), nil
}

func (c *ctSocket) request(op, flags int) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(int(netlink.ConntrackTable)<<8|op, flags)
	req.AddData(&nl.Nfgenmsg{NfgenFamily: c.family, Version: nl.NFNETLINK_V0})
	return req
}

// exchange sends req and reads its answer up to the end of a dump or the
// acknowledgement, handing each data message to each (if not nil). A
// refusal is its errno, with the kernel's reason when it gave one
// (openCT).
func (c *ctSocket) exchange(req *nl.NetlinkRequest, each func(syscall.NetlinkMessage)) error {
	if err := c.s.Send(req); err != nil {
		return err
	}
	for {
		msgs, from, err := c.s.Receive()
		if err != nil {
			return err
		}
		if from.Pid != nl.PidKernel {
			continue
		}
		for _, m := range msgs {
			if m.Header.Seq != req.Seq || m.Header.Pid != c.pid {
				continue
			}
			switch m.Header.Type {
			case unix.NLMSG_DONE, unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return nil
				}
				if errno := int32(nl.NativeEndian().Uint32(m.Data[:4])); errno != 0 {
					return backend.KernelError(errno, m.Header.Type, m.Header.Flags, m.Data)
				}
				return nil
			}
			if each != nil {
				each(m)
			}
			if m.Header.Flags&unix.NLM_F_MULTI == 0 {
				return nil
			}
		}
	}
}

// parseConntrack reads what unmasqueraded looks at of a conntrack entry,
// as the kernel sends it (struct nfgenmsg, then attributes): both tuples'
// addresses and, for protocols with ports, their ports. ok is false unless
// both tuples have both addresses.
func parseConntrack(data []byte) (flow *netlink.ConntrackFlow, ok bool) {
	if len(data) < nl.SizeofNfgenmsg {
		return nil, false
	}
	attrs, err := backend.RouteAttrs(data[nl.SizeofNfgenmsg:])
	if err != nil {
		return nil, false
	}
	flow = &netlink.ConntrackFlow{FamilyType: data[0]}
	var orig, reply bool
	for _, a := range attrs {
		switch a.Attr.Type & nl.NLA_TYPE_MASK {
		case nl.CTA_TUPLE_ORIG:
			orig = parseTuple(a.Value, &flow.Forward)
		case nl.CTA_TUPLE_REPLY:
			reply = parseTuple(a.Value, &flow.Reverse)
		}
	}
	return flow, orig && reply
}

func parseTuple(b []byte, t *netlink.IPTuple) bool {
	attrs, err := backend.RouteAttrs(b)
	if err != nil {
		return false
	}
	for _, a := range attrs {
		typ := a.Attr.Type & nl.NLA_TYPE_MASK
		if typ != nl.CTA_TUPLE_IP && typ != nl.CTA_TUPLE_PROTO {
			continue
		}
		inner, err := backend.RouteAttrs(a.Value)
		if err != nil {
			return false
		}
		switch typ {
		case nl.CTA_TUPLE_IP:
			for _, x := range inner {
				switch x.Attr.Type & nl.NLA_TYPE_MASK {
				case nl.CTA_IP_V4_SRC, nl.CTA_IP_V6_SRC:
					t.SrcIP = net.IP(slices.Clone(x.Value))
				case nl.CTA_IP_V4_DST, nl.CTA_IP_V6_DST:
					t.DstIP = net.IP(slices.Clone(x.Value))
				}
			}
		case nl.CTA_TUPLE_PROTO:
			for _, x := range inner {
				switch x.Attr.Type & nl.NLA_TYPE_MASK {
				case nl.CTA_PROTO_NUM:
					if len(x.Value) >= 1 {
						t.Protocol = x.Value[0]
					}
				case nl.CTA_PROTO_SRC_PORT:
					if len(x.Value) >= 2 {
						t.SrcPort = binary.BigEndian.Uint16(x.Value)
					}
				case nl.CTA_PROTO_DST_PORT:
					if len(x.Value) >= 2 {
						t.DstPort = binary.BigEndian.Uint16(x.Value)
					}
				}
			}
		}
	}
	return t.SrcIP != nil && t.DstIP != nil
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
