package backend

import (
	"encoding/binary"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TestNeighEventsUnreadable: a neighbour message that parseNeighEntry
// cannot read (a payload shorter than its header, an NDA_VNI shorter than
// its value, an attribute short of its header or past the message's end)
// ends the datagram's events with an error naming the message and why,
// after the events before it. netlink's NeighDeserialize, which read them
// before, panicked on the first two, which ended agentd until readEvents
// recovered; it panicked too on a short NDA_CACHEINFO or NDA_VLAN and on a
// last attribute not padded to 4 bytes, which parseNeighEntry reads as the
// kernel does: not the attributes it has no use for, the unpadded one as
// it stands. The kernel writes no such message; a vendor's may.
func TestNeighEventsUnreadable(t *testing.T) {
	mac := net.HardwareAddr{0x3e, 0x1b, 0x7c, 0, 0, 1}
	good := nlMessage(unix.RTM_NEWNEIGH, neighMessage(9, net.IP{10, 244, 5, 0}, mac))
	fdb := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: 9, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
	checkUnreadable(t, "neighEvents", neighEvents, good, true, func(e NeighEvent) bool {
		return e.IP.Equal(net.IP{10, 244, 5, 0})
	}, []unreadableCase{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWNEIGH, []byte{unix.AF_INET, 0, 0, 0}),
			"unreadable neighbour message (type 28, 4 bytes 02000000): shorter than struct ndmsg"},
		{"empty payload", nlMessage(unix.RTM_DELNEIGH, nil), "unreadable neighbour message (type 29, 0 bytes): shorter than struct ndmsg"},
		{"NDA_VNI of 0 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_VNI}, [][]byte{{}})),
			"unreadable neighbour message (type 28, 16 bytes"},
		{"attribute short of its header", nlMessage(unix.RTM_NEWNEIGH, append(ndMessage(fdb, []uint16{unix.NDA_LLADDR}, [][]byte{mac}), 2, 0, unix.NDA_DST, 0)),
			"unreadable neighbour message (type 28, 28 bytes"},
		{"attribute past the end", nlMessage(unix.RTM_NEWNEIGH, append(ndMessage(fdb, []uint16{unix.NDA_LLADDR}, [][]byte{mac}), 8, 0, unix.NDA_DST, 0)),
			"unreadable neighbour message (type 28, 28 bytes"},
	})
	for _, c := range []struct {
		name string
		msg  []byte
	}{
		{"an NDA_CACHEINFO of 8 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_DST, unix.NDA_CACHEINFO}, [][]byte{mac, {198, 18, 0, 2}, make([]byte, 8)}))},
		{"an NDA_VLAN of 0 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_DST, unix.NDA_VLAN}, [][]byte{mac, {198, 18, 0, 2}, {}}))},
		{"its last attribute unpadded", unpadded(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_DST, unix.NDA_PROBES}, [][]byte{mac, {198, 18, 0, 2}, {1}})[:unix.SizeofNdMsg+12+8+5])},
	} {
		msgs, err := syscall.ParseNetlinkMessage(slices.Clip(c.msg))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		evs, err := neighEvents(msgs)
		if err != nil || len(evs) != 1 || !evs[0].IP.Equal(net.IP{198, 18, 0, 2}) || evs[0].HardwareAddr.String() != mac.String() ||
			evs[0].LinkIndex != 9 || evs[0].Family != unix.AF_BRIDGE || evs[0].Flags != netlink.NTF_SELF || evs[0].Type != unix.RTM_NEWNEIGH {
			t.Errorf("neighEvents of an FDB entry with %s: %+v, %v", c.name, evs, err)
		}
	}
}

// TestLinkEventsUnreadable: a link message that netlink cannot read (a
// payload shorter than struct ifinfomsg, on which netlink's own subscription
// goroutine panics, as a vendor's kernel sent one:
// vishvananda/netlink#1099) ends the datagram's events with an error naming
// it, after the events before it.
func TestLinkEventsUnreadable(t *testing.T) {
	good := nlMessage(unix.RTM_NEWLINK, linkMessage(7, "flannel.1"))
	checkUnreadable(t, "linkEvents", linkEvents, good, true, func(e netlink.LinkUpdate) bool {
		return e.Attrs().Name == "flannel.1" && e.Index == 7 && e.Header.Type == unix.RTM_NEWLINK
	}, []unreadableCase{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWLINK, []byte{0, 0, 0, 0}), "unreadable link message (type 16, 4 bytes 00000000)"},
		{"last attribute unpadded", unpadded(unix.RTM_DELLINK, append(linkMessage(8, "x"), 5, 0, unix.IFLA_OPERSTATE, 0, 6)),
			"unreadable link message (type 17, 29 bytes"},
	})
}

// TestAddrEventsUnreadable: an address message that netlink's
// AddrSubscribe panics on (one with no IFA_ADDRESS nor IFA_LOCAL, on whose
// nil address it reads; an empty IFA_LABEL, of which it cuts the last byte)
// or that is not one (a payload shorter than struct ifaddrmsg) ends the
// datagram's events with an error naming it, after the events before it.
func TestAddrEventsUnreadable(t *testing.T) {
	good := nlMessage(unix.RTM_NEWADDR, kernelAddr(unix.AF_INET, 24, unix.RT_SCOPE_UNIVERSE, 7, net.IP{198, 18, 0, 1}, net.IP{198, 18, 0, 1}, net.IP{198, 18, 0, 255}, "ext0", unix.IFA_F_PERMANENT))
	hdr := unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: 24, Index: 7}
	checkUnreadable(t, "addrEvents", addrEvents, good, false, func(e netlink.AddrUpdate) bool {
		return e.LinkAddress.String() == "198.18.0.1/24" && e.LinkIndex == 7 && e.NewAddr
	}, []unreadableCase{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWADDR, []byte{unix.AF_INET, 24, 0, 0}), "unreadable address message (type 20, 4 bytes 02180000): address message of 4 bytes"},
		{"no address", nlMessage(unix.RTM_DELADDR, ifAddrMessage(hdr, []uint16{unix.IFA_FLAGS}, [][]byte{{0x80, 0, 0, 0}})),
			"unreadable address message (type 21, 16 bytes 02180000070000000800080080000000): no address in it"},
		{"not an address message", nlMessage(unix.RTM_NEWROUTE, make([]byte, 12)), "unreadable address message (type 24, 12 bytes"},
	})
	// An empty IFA_LABEL is read as no label.
	m := ifAddrMessage(hdr, []uint16{unix.IFA_LOCAL, unix.IFA_LABEL}, [][]byte{{198, 18, 0, 1}, {}})
	msgs, err := syscall.ParseNetlinkMessage(slices.Clip(nlMessage(unix.RTM_NEWADDR, m)))
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := addrEvents(msgs); err != nil || len(evs) != 1 || evs[0].LinkAddress.String() != "198.18.0.1/32" {
		t.Errorf("addrEvents of an address with an empty label: %+v, %v", evs, err)
	}
}

// TestRouteEventsUnreadable: a route message that netlink's
// RouteSubscribe cannot read ends the datagram's events with an error
// naming it, after the events before it, as for the other groups. netlink
// panicked on its subscription's goroutine, which ended agentd, on a
// payload shorter than struct rtmsg and on an RTA_OIF, RTA_PRIORITY,
// RTA_TABLE or metric shorter than the 4 bytes it reads, where the message
// ends there; it read the padding or the next message's bytes as the
// value's where it does not. It handed over no event and went on, so no
// pass repaired the route until the next resync, for an attribute short
// of its header and a multipath next hop longer than what is left. A last
// attribute not padded to 4 bytes, on which netlink panicked too, is read
// as the kernel reads it.
func TestRouteEventsUnreadable(t *testing.T) {
	good := nlMessage(unix.RTM_NEWROUTE, kernelRoute(netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddr("198.18.0.5"), 7))
	hdr := rtMsg{Family: unix.AF_INET, DstLen: 24, Table: unix.RT_TABLE_MAIN, Protocol: 74, Type: unix.RTN_UNICAST}
	dst := []byte{10, 244, 6, 0}
	checkUnreadable(t, "routeEvents", routeEvents, good, true, func(e netlink.RouteUpdate) bool {
		return e.Dst.String() == "10.244.5.0/24" && e.Gw.Equal(net.IP{198, 18, 0, 5}) && e.LinkIndex == 7 &&
			e.Protocol == 74 && e.Table == unix.RT_TABLE_MAIN && e.Type == unix.RTM_NEWROUTE
	}, []unreadableCase{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWROUTE, []byte{unix.AF_INET, 24, 0, 0}),
			"unreadable route message (type 24, 4 bytes 02180000): rtnetlink RouteMessage is invalid or too short"},
		{"empty payload", nlMessage(unix.RTM_DELROUTE, nil), "unreadable route message (type 25, 0 bytes)"},
		{"RTA_OIF of 0 bytes", nlMessage(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_OIF}, [][]byte{dst, {}})),
			"unreadable route message (type 24, 24 bytes"},
		{"RTA_OIF of 2 bytes", nlMessage(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_OIF}, [][]byte{dst, {7, 0}})),
			"unreadable route message (type 24, 28 bytes"},
		{"RTA_PRIORITY of 0 bytes", nlMessage(unix.RTM_DELROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_PRIORITY}, [][]byte{dst, {}})),
			"unreadable route message (type 25, 24 bytes"},
		{"RTA_TABLE of 0 bytes", nlMessage(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_TABLE}, [][]byte{{}})),
			"unreadable route message (type 24, 16 bytes"},
		{"RTAX_MTU of 0 bytes", nlMessage(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_METRICS}, [][]byte{dst, {4, 0, unix.RTAX_MTU, 0}})),
			"unreadable route message (type 24, 28 bytes"},
		{"attribute short of its header", nlMessage(unix.RTM_NEWROUTE, append(rtMessage(hdr, []uint16{unix.RTA_DST}, [][]byte{dst}), 2, 0, unix.RTA_OIF, 0)),
			"unreadable route message (type 24, 24 bytes"},
		{"next hop past the end", nlMessage(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_MULTIPATH}, [][]byte{dst, {16, 0, 0, 0, 7, 0, 0, 0}})),
			"unreadable route message (type 24, 32 bytes"},
		{"not a route message", nlMessage(unix.RTM_NEWADDR, make([]byte, 12)), "unreadable route message (type 20, 12 bytes 000000000000000000000000): not a route message"},
	})
	// An unpadded last attribute (RTA_PREF, 1 byte) is read, as the kernel
	// reads it.
	m := unpadded(unix.RTM_NEWROUTE, rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_OIF, unix.RTA_PREF}, [][]byte{dst, {7, 0, 0, 0}, {1}})[:unix.SizeofRtMsg+8+8+5])
	msgs, err := syscall.ParseNetlinkMessage(slices.Clip(m))
	if err != nil {
		t.Fatal(err)
	}
	if evs, err := routeEvents(msgs); err != nil || len(evs) != 1 || evs[0].Dst.String() != "10.244.6.0/24" || evs[0].LinkIndex != 7 {
		t.Errorf("routeEvents of a route whose last attribute is not padded: %+v, %v", evs, err)
	}
}

// unreadableCase is a message an events reader must refuse, and the start
// of the error it must give.
type unreadableCase struct {
	name string
	msg  []byte
	want string
}

// checkUnreadable gives read, for each case, a datagram of good and the
// case's message: last, as in the kernel's datagram of one event, and
// (with followed) followed by good again, whose bytes netlink read as a
// short attribute's. read must return an error beginning with the case's
// want, and good's event alone, which first checks.
func checkUnreadable[E any](t *testing.T, name string, read func([]syscall.NetlinkMessage) ([]E, error), good []byte, followed bool, first func(E) bool, cases []unreadableCase) {
	t.Helper()
	after := [][]byte{nil}
	if followed {
		after = append(after, good)
	}
	for _, c := range cases {
		for _, a := range after {
			pos := "last"
			if a != nil {
				pos = "followed"
			}
			t.Run(c.name+" "+pos, func(t *testing.T) {
				// In a buffer of its own length, as netlink's Receive
				// hands over a datagram.
				dgram := slices.Clip(append(append(append([]byte(nil), good...), c.msg...), a...))
				msgs, err := syscall.ParseNetlinkMessage(dgram)
				if err != nil {
					t.Fatalf("ParseNetlinkMessage(%x): %v", dgram, err)
				}
				evs, err := read(msgs)
				if err == nil || !strings.HasPrefix(err.Error(), c.want) {
					t.Fatalf("%s(%x): error %v, want one beginning %q", name, dgram, err, c.want)
				}
				if len(evs) != 1 || !first(evs[0]) {
					t.Fatalf("%s(%x): events %+v, want the first message's only", name, dgram, evs)
				}
			})
		}
	}
}

// rtMsg is struct rtmsg.
type rtMsg struct {
	Family, DstLen, SrcLen, Tos, Table, Protocol, Scope, Type uint8
	Flags                                                     uint32
}

// rtMessage is a route message's payload: hdr, then attributes of types
// with values.
func rtMessage(hdr rtMsg, types []uint16, values [][]byte) []byte {
	m := []byte{hdr.Family, hdr.DstLen, hdr.SrcLen, hdr.Tos, hdr.Table, hdr.Protocol, hdr.Scope, hdr.Type}
	m = binary.NativeEndian.AppendUint32(m, hdr.Flags)
	for i, typ := range types {
		m = append(m, nl.NewRtAttr(int(typ), values[i]).Serialize()...)
	}
	return m
}

// kernelRoute is an IPv4 route of ours in the main table as fib_dump_info
// writes it: RTA_TABLE, RTA_DST, RTA_GATEWAY and RTA_OIF.
func kernelRoute(dst netip.Prefix, gw netip.Addr, index uint32) []byte {
	hdr := rtMsg{Family: unix.AF_INET, DstLen: uint8(dst.Bits()), Table: unix.RT_TABLE_MAIN, Protocol: 74, Type: unix.RTN_UNICAST}
	d, g := dst.Addr().As4(), gw.As4()
	return rtMessage(hdr, []uint16{unix.RTA_TABLE, unix.RTA_DST, unix.RTA_GATEWAY, unix.RTA_OIF},
		[][]byte{binary.NativeEndian.AppendUint32(nil, unix.RT_TABLE_MAIN), d[:], g[:], binary.NativeEndian.AppendUint32(nil, index)})
}

// linkMessage is an RTM_NEWLINK payload as rtnl_fill_ifinfo begins one:
// the header and IFLA_IFNAME.
func linkMessage(index int32, name string) []byte {
	b := []byte{unix.AF_UNSPEC, 0, 0, 0} // ifi_family, padding, ifi_type
	b = binary.NativeEndian.AppendUint32(b, uint32(index))
	b = binary.NativeEndian.AppendUint32(b, unix.IFF_UP)
	b = binary.NativeEndian.AppendUint32(b, 0) // ifi_change
	v := append([]byte(name), 0)
	b = binary.NativeEndian.AppendUint16(b, uint16(unix.SizeofRtAttr+len(v)))
	b = binary.NativeEndian.AppendUint16(b, unix.IFLA_IFNAME)
	b = append(b, v...)
	return append(b, make([]byte, -len(b)&3)...)
}

// unpadded is nlMessage(typ, data) but with a header length that leaves
// out the padding after data: a message whose last attribute, when data
// ends with one of a length not a multiple of 4, lacks its padding.
func unpadded(typ uint16, data []byte) []byte {
	m := nlMessage(typ, data)
	binary.NativeEndian.PutUint32(m, uint32(unix.SizeofNlMsghdr+len(data)))
	return m
}
