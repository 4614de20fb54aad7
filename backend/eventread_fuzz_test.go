package backend

import (
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FuzzEventsRaw: neighEvents, linkEvents, addrEvents and routeEvents, the
// readers of what one receive of a subscription of ours holds, read any datagram that
// netlink's Receive hands over (one syscall.ParseNetlinkMessage reads)
// without panicking, whatever the messages' types and payloads: they hand
// over an event for each message up to the first they cannot read or that
// is an error message, in order and of its message's type, passing over
// NLMSG_DONE and acknowledgements; with no error, one for each message
// other than those. Each neighbour event is its message as
// parseNeighEntry reads it, and so as netlink's NeighDeserialize does where
// it can (checkNeighEntry).
func FuzzEventsRaw(f *testing.F) {
	mac := net.HardwareAddr{0x3e, 0x1b, 0x7c, 0, 0, 1}
	f.Add(nlMessage(unix.RTM_NEWNEIGH, neighMessage(9, net.IP{10, 244, 5, 0}, mac)))
	f.Add(nlMessage(unix.RTM_NEWNEIGH, fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, []byte{0, 0, 0, 0})))
	f.Add(nlMessage(unix.RTM_NEWNEIGH, []byte{unix.AF_INET, 0, 0, 0}))
	f.Add(unpadded(unix.RTM_NEWNEIGH, fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, nil)[:unix.SizeofNdMsg+5]))
	fdb := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: 9, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
	f.Add(nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_DST, unix.NDA_CACHEINFO}, [][]byte{mac, {198, 18, 0, 2}, make([]byte, 8)})))
	f.Add(nlMessage(unix.RTM_DELNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_VNI}, [][]byte{mac, {}})))
	f.Add(nlMessage(unix.RTM_GETNEIGH, ndMessage(fdb, []uint16{unix.NDA_LLADDR, unix.NDA_LLADDR}, [][]byte{mac, {198, 18, 0, 2}})))
	f.Add(nlMessage(unix.RTM_NEWLINK, linkMessage(7, "flannel.1")))
	f.Add(nlMessage(unix.RTM_NEWLINK, []byte{0, 0, 0, 0}))
	f.Add(nlMessage(unix.RTM_NEWADDR, kernelAddr(unix.AF_INET, 24, 0, 7, net.IP{198, 18, 0, 1}, net.IP{198, 18, 0, 1}, nil, "ext0", 0x80)))
	f.Add(nlMessage(unix.RTM_DELADDR, kernelAddr(unix.AF_INET6, 64, 0, 7, nil, net.ParseIP("2001:db8::1"), nil, "", 0)))
	f.Add(nlMessage(unix.RTM_NEWROUTE, kernelRoute(netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddr("198.18.0.5"), 7)))
	f.Add(nlMessage(unix.RTM_DELROUTE, rtMessage(rtMsg{Family: unix.AF_INET, DstLen: 24, Table: unix.RT_TABLE_MAIN, Protocol: 74, Type: unix.RTN_UNICAST},
		[]uint16{unix.RTA_DST, unix.RTA_METRICS, unix.RTA_MULTIPATH},
		[][]byte{{10, 244, 6, 0}, {8, 0, unix.RTAX_MTU, 0, 0x78, 5, 0, 0}, {16, 0, 0, 0, 7, 0, 0, 0, 8, 0, unix.RTA_GATEWAY, 0, 198, 18, 0, 7}})))
	f.Add(nlMessage(unix.RTM_NEWROUTE, []byte{unix.AF_INET, 24, 0, 0}))
	f.Add(append(nlMessage(unix.NLMSG_DONE, []byte{0, 0, 0, 0}), nlMessage(unix.NLMSG_ERROR, make([]byte, 4+unix.SizeofNlMsghdr))...))
	f.Fuzz(func(t *testing.T, dgram []byte) {
		// As Receive hands it over: in a buffer of its own length.
		msgs, err := syscall.ParseNetlinkMessage(slices.Clip(dgram))
		if err != nil {
			return
		}
		var types []uint16 // of the messages that are events
		var events []syscall.NetlinkMessage
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 && m.Data[0]|m.Data[1]|m.Data[2]|m.Data[3] == 0 || m.Header.Type == unix.NLMSG_DONE {
				continue
			}
			types = append(types, m.Header.Type)
			events = append(events, m)
		}
		check := func(name string, got []uint16, err error) {
			if len(got) > len(types) || !slices.Equal(got, types[:len(got)]) || err == nil && len(got) != len(types) {
				t.Fatalf("%s(%x): events of types %v, error %v; the messages' types are %v", name, dgram, got, err, types)
			}
		}
		neighs, err := neighEvents(msgs)
		var got []uint16
		for _, ev := range neighs {
			got = append(got, ev.Type)
		}
		check("neighEvents", got, err)
		// Each neighbour event is its message as parseNeighEntry reads
		// it, which reads it as netlink's NeighDeserialize
		// (checkNeighEntry).
		for i, ev := range neighs {
			m := events[i].Data
			var e neighEntry
			if err := parseNeighEntry(m, &e); err != nil {
				t.Fatalf("neighEvents(%x): event %d of a message parseNeighEntry cannot read: %v", dgram, i, err)
			}
			n := ev.Neigh
			if n.LinkIndex != e.LinkIndex || n.Family != e.Family || n.State != e.State || n.Type != e.Type || n.Flags != e.Flags ||
				string(n.IP) != string(e.IP) || string(n.HardwareAddr) != string(e.LLAddr) || n.VNI != e.VNI || ev.VNIZero != e.VNIZero {
				t.Fatalf("neighEvents(%x): event %d is %+v; parseNeighEntry reads %+v", dgram, i, ev, e)
			}
			checkNeighEntry(t, m)
		}
		links, err := linkEvents(msgs)
		got = nil
		for _, ev := range links {
			got = append(got, ev.Header.Type)
		}
		check("linkEvents", got, err)
		addrs, err := addrEvents(msgs)
		got = nil
		for _, ev := range addrs {
			got = append(got, map[bool]uint16{true: unix.RTM_NEWADDR, false: unix.RTM_DELADDR}[ev.NewAddr])
		}
		check("addrEvents", got, err)
		routes, err := routeEvents(msgs)
		got = nil
		for _, ev := range routes {
			got = append(got, ev.Type)
		}
		check("routeEvents", got, err)
	})
}
