package iptables

import (
	"bytes"
	"encoding/binary"
	"net"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// portProtos are the protocols whose tuples the kernel writes with ports
// (nf_ct_port_tuple_to_nlattr): TCP, UDP, DCCP, GRE (its keys), SCTP and
// UDP-Lite.
var portProtos = []uint8{unix.IPPROTO_TCP, unix.IPPROTO_UDP, unix.IPPROTO_DCCP, unix.IPPROTO_GRE, unix.IPPROTO_SCTP, unix.IPPROTO_UDPLITE}

// ctTupleAttr writes a tuple as ctnetlink_dump_tuples does: CTA_TUPLE_IP with
// the addresses, CTA_TUPLE_PROTO with the protocol and its ports for
// portProtos, ICMP's and ICMPv6's id, type and code, nothing more for the
// others (nf_conntrack_l4proto_generic), nested and flagged so.
func ctTupleAttr(typ int, t netlink.IPTuple) *nl.RtAttr {
	tuple := nl.NewRtAttr(unix.NLA_F_NESTED|typ, nil)
	ip := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_IP, nil)
	if t.SrcIP.To4() != nil {
		ip.AddRtAttr(nl.CTA_IP_V4_SRC, t.SrcIP.To4())
		ip.AddRtAttr(nl.CTA_IP_V4_DST, t.DstIP.To4())
	} else {
		ip.AddRtAttr(nl.CTA_IP_V6_SRC, t.SrcIP.To16())
		ip.AddRtAttr(nl.CTA_IP_V6_DST, t.DstIP.To16())
	}
	proto := tuple.AddRtAttr(unix.NLA_F_NESTED|nl.CTA_TUPLE_PROTO, nil)
	proto.AddRtAttr(nl.CTA_PROTO_NUM, []byte{t.Protocol})
	switch {
	case t.Protocol == unix.IPPROTO_ICMP:
		proto.AddRtAttr(4, binary.BigEndian.AppendUint16(nil, 77)) // CTA_PROTO_ICMP_ID
		proto.AddRtAttr(5, []byte{8})                              // CTA_PROTO_ICMP_TYPE
		proto.AddRtAttr(6, []byte{0})                              // CTA_PROTO_ICMP_CODE
	case t.Protocol == unix.IPPROTO_ICMPV6:
		proto.AddRtAttr(7, binary.BigEndian.AppendUint16(nil, 77)) // CTA_PROTO_ICMPV6_ID
		proto.AddRtAttr(8, []byte{128})                            // CTA_PROTO_ICMPV6_TYPE
		proto.AddRtAttr(9, []byte{0})                              // CTA_PROTO_ICMPV6_CODE
	case slices.Contains(portProtos, t.Protocol):
		proto.AddRtAttr(nl.CTA_PROTO_SRC_PORT, binary.BigEndian.AppendUint16(nil, t.SrcPort))
		proto.AddRtAttr(nl.CTA_PROTO_DST_PORT, binary.BigEndian.AppendUint16(nil, t.DstPort))
	}
	return tuple
}

// ctEntry writes a conntrack entry as a dump's IPCTNL_MSG_CT_NEW carries it
// (ctnetlink_fill_info): struct nfgenmsg, both tuples, then status,
// timeout, mark, use and id.
func ctEntry(family uint8, fwd, rev netlink.IPTuple) []byte {
	m := []byte{family, nl.NFNETLINK_V0, 0, 0}
	m = append(m, ctTupleAttr(nl.CTA_TUPLE_ORIG, fwd).Serialize()...)
	m = append(m, ctTupleAttr(nl.CTA_TUPLE_REPLY, rev).Serialize()...)
	for _, a := range []struct {
		typ int
		v   uint32
	}{{nl.CTA_STATUS, 0x18e}, {nl.CTA_TIMEOUT, 117}, {nl.CTA_MARK, 0}, {nl.CTA_USE, 1}, {nl.CTA_ID, 0x6b7c0a31}} {
		m = append(m, nl.NewRtAttr(a.typ, binary.BigEndian.AppendUint32(nil, a.v)).Serialize()...)
	}
	return m
}

// FuzzParseConntrack: parseConntrack, which reads every entry of the
// conntrack table that DeleteUnmasqueraded lists, does not panic on any
// message, and what it accepts has both addresses of both tuples, copied
// out of the message. An entry written as the kernel writes one reads
// back as its tuples: addresses, protocol, and the ports of a protocol that
// has them.
func FuzzParseConntrack(f *testing.F) {
	tcp := ctEntry(unix.AF_INET,
		netlink.IPTuple{SrcIP: net.IP{10, 244, 1, 5}, DstIP: net.IP{10, 96, 0, 10}, Protocol: unix.IPPROTO_TCP, SrcPort: 43512, DstPort: 443},
		netlink.IPTuple{SrcIP: net.IP{198, 18, 7, 9}, DstIP: net.IP{10, 244, 1, 5}, Protocol: unix.IPPROTO_TCP, SrcPort: 8443, DstPort: 43512})
	icmp := ctEntry(unix.AF_INET,
		netlink.IPTuple{SrcIP: net.IP{10, 244, 1, 5}, DstIP: net.IP{198, 18, 0, 1}, Protocol: unix.IPPROTO_ICMP},
		netlink.IPTuple{SrcIP: net.IP{198, 18, 0, 1}, DstIP: net.IP{10, 244, 1, 5}, Protocol: unix.IPPROTO_ICMP})
	udp6 := ctEntry(unix.AF_INET6,
		netlink.IPTuple{SrcIP: net.ParseIP("fd00:244::5"), DstIP: net.ParseIP("2001:db8::53"), Protocol: unix.IPPROTO_UDP, SrcPort: 5353, DstPort: 53},
		netlink.IPTuple{SrcIP: net.ParseIP("2001:db8::53"), DstIP: net.ParseIP("fd00:244::5"), Protocol: unix.IPPROTO_UDP, SrcPort: 53, DstPort: 5353})
	for _, m := range [][]byte{tcp, icmp, udp6, tcp[:len(tcp)-9], {2, 0, 0, 0}, {2, 0, 0}} {
		f.Add(m, false, []byte{}, uint8(0), uint16(0), uint16(0))
	}
	for _, c := range ctCases {
		flow := ctFlow(f, c)
		f.Add(ctEntry(flow.FamilyType, flow.Forward, flow.Reverse), false, []byte{}, uint8(0), uint16(0), uint16(0))
	}
	f.Add([]byte{}, false, []byte{10, 244, 1, 5, 10, 96, 0, 10, 198, 18, 7, 9}, uint8(unix.IPPROTO_UDP), uint16(53), uint16(5353))
	f.Add([]byte{}, true, []byte("fd00:244::5 fd00:244::6 2001:db8::1\x00"), uint8(unix.IPPROTO_SCTP), uint16(38412), uint16(0))
	f.Add([]byte{}, true, []byte("fd00:244::5 fd00:244::6 2001:db8::1\x00"), uint8(unix.IPPROTO_ICMPV6), uint16(1), uint16(2))
	f.Add([]byte{}, false, []byte{10, 244, 1, 5, 198, 18, 0, 9, 198, 18, 0, 9}, uint8(unix.IPPROTO_ESP), uint16(1), uint16(2))
	f.Fuzz(func(t *testing.T, raw []byte, v6 bool, addrs []byte, proto uint8, sport, dport uint16) {
		msg := bytes.Clone(raw)
		if flow, ok := parseConntrack(msg); ok {
			ips := []net.IP{flow.Forward.SrcIP, flow.Forward.DstIP, flow.Reverse.SrcIP, flow.Reverse.DstIP}
			var before []string
			for _, ip := range ips {
				if ip == nil {
					t.Fatalf("parseConntrack(%x) accepted %+v, without an address", raw, flow)
				}
				before = append(before, string(ip))
			}
			clear(msg)
			for i, ip := range ips {
				if string(ip) != before[i] {
					t.Fatalf("parseConntrack(%x): an address of %+v is read in place, not copied", raw, flow)
				}
			}
		}

		// An entry of the addresses in addrs (IPv4, or IPv6 when v6).
		n := 4
		family := uint8(unix.AF_INET)
		if v6 {
			n, family = 16, unix.AF_INET6
		}
		ip := func(i int) net.IP {
			b := make([]byte, n)
			copy(b, addrs[min(len(addrs), i*n):])
			return b
		}
		if !slices.Contains(portProtos, proto) {
			sport, dport = 0, 0 // none written, none read
		}
		fwd := netlink.IPTuple{SrcIP: ip(0), DstIP: ip(1), Protocol: proto, SrcPort: sport, DstPort: dport}
		rev := netlink.IPTuple{SrcIP: ip(2), DstIP: ip(0), Protocol: proto, SrcPort: dport, DstPort: sport}
		m := ctEntry(family, fwd, rev)
		flow, ok := parseConntrack(m)
		if !ok {
			t.Fatalf("parseConntrack(%x), an entry of %+v and %+v: refused", m, fwd, rev)
		}
		for _, c := range []struct {
			what      string
			got, want netlink.IPTuple
		}{{"original", flow.Forward, fwd}, {"reply", flow.Reverse, rev}} {
			if !c.got.SrcIP.Equal(c.want.SrcIP) || !c.got.DstIP.Equal(c.want.DstIP) || c.got.Protocol != c.want.Protocol ||
				c.got.SrcPort != c.want.SrcPort || c.got.DstPort != c.want.DstPort {
				t.Fatalf("parseConntrack(%x): %s tuple %+v, want %+v", m, c.what, c.got, c.want)
			}
		}
		if flow.FamilyType != family {
			t.Fatalf("parseConntrack(%x): family %d, want %d", m, flow.FamilyType, family)
		}
	})
}
