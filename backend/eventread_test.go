package backend

import (
	"encoding/binary"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestNeighEventsUnreadable: a neighbour message that netlink's
// NeighDeserialize cannot read, because it panics on it (a payload shorter
// than its header, an attribute shorter than the value netlink reads from
// it, a last attribute not padded to 4 bytes), ends the datagram's events
// with an error naming the message, after the events before it, as a
// message it reports an error for does; it does not panic the reader's
// goroutine, which would end agentd. The kernel writes no such message; a
// vendor's may.
func TestNeighEventsUnreadable(t *testing.T) {
	good := nlMessage(unix.RTM_NEWNEIGH, neighMessage(9, net.IP{10, 244, 5, 0}, net.HardwareAddr{0x3e, 0x1b, 0x7c, 0, 0, 1}))
	fdb := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: 9, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
	for _, c := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWNEIGH, []byte{unix.AF_INET, 0, 0, 0}),
			"unreadable neighbour message (type 28, 4 bytes 02000000)"},
		{"empty payload", nlMessage(unix.RTM_DELNEIGH, nil), "unreadable neighbour message (type 29, 0 bytes)"},
		{"NDA_VNI of 0 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_VNI}, [][]byte{{}})),
			"unreadable neighbour message (type 28, 16 bytes"},
		{"NDA_CACHEINFO of 8 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_CACHEINFO}, [][]byte{make([]byte, 8)})),
			"unreadable neighbour message (type 28, 24 bytes"},
		{"NDA_VLAN of 0 bytes", nlMessage(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_VLAN}, [][]byte{{}})),
			"unreadable neighbour message (type 28, 16 bytes"},
		{"last attribute unpadded", unpadded(unix.RTM_NEWNEIGH, ndMessage(fdb, []uint16{unix.NDA_PROBES}, [][]byte{{1}})[:unix.SizeofNdMsg+5]),
			"unreadable neighbour message (type 28, 17 bytes"},
	} {
		// Last, as in the kernel's datagram of one event, and followed by
		// another, whose bytes netlink reads as the short attribute's.
		for _, pos := range []struct {
			name  string
			after []byte
		}{{"last", nil}, {"followed", good}} {
			t.Run(c.name+" "+pos.name, func(t *testing.T) {
				// In a buffer of its own length, as netlink's Receive
				// hands over a datagram.
				dgram := slices.Clip(append(append(append([]byte(nil), good...), c.msg...), pos.after...))
				msgs, err := syscall.ParseNetlinkMessage(dgram)
				if err != nil {
					t.Fatalf("ParseNetlinkMessage(%x): %v", dgram, err)
				}
				evs, err := neighEvents(msgs)
				if err == nil || !strings.HasPrefix(err.Error(), c.want) {
					t.Fatalf("neighEvents(%x): error %v, want one beginning %q", dgram, err, c.want)
				}
				if len(evs) != 1 || !evs[0].IP.Equal(net.IP{10, 244, 5, 0}) {
					t.Fatalf("neighEvents(%x): events %+v, want the first message's only", dgram, evs)
				}
			})
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
	for _, c := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWLINK, []byte{0, 0, 0, 0}), "unreadable link message (type 16, 4 bytes 00000000)"},
		{"last attribute unpadded", unpadded(unix.RTM_DELLINK, append(linkMessage(8, "x"), 5, 0, unix.IFLA_OPERSTATE, 0, 6)),
			"unreadable link message (type 17, 29 bytes"},
	} {
		// Last, as in the kernel's datagram of one event, and followed by
		// another, whose bytes netlink reads as the short attribute's.
		for _, pos := range []struct {
			name  string
			after []byte
		}{{"last", nil}, {"followed", good}} {
			t.Run(c.name+" "+pos.name, func(t *testing.T) {
				// In a buffer of its own length, as netlink's Receive
				// hands over a datagram.
				dgram := slices.Clip(append(append(append([]byte(nil), good...), c.msg...), pos.after...))
				msgs, err := syscall.ParseNetlinkMessage(dgram)
				if err != nil {
					t.Fatalf("ParseNetlinkMessage(%x): %v", dgram, err)
				}
				evs, err := linkEvents(msgs)
				if err == nil || !strings.HasPrefix(err.Error(), c.want) {
					t.Fatalf("linkEvents(%x): error %v, want one beginning %q", dgram, err, c.want)
				}
				if len(evs) != 1 || evs[0].Attrs().Name != "flannel.1" || evs[0].Index != 7 || evs[0].Header.Type != unix.RTM_NEWLINK {
					t.Fatalf("linkEvents(%x): events %+v, want the first message's only", dgram, evs)
				}
			})
		}
	}
}

// TestAddrEventsUnreadable: an address message that netlink's
// AddrSubscribe panics on (one with no IFA_ADDRESS nor IFA_LOCAL, on whose
// nil address it reads; an empty IFA_LABEL, of which it cuts the last byte)
// or that is not one (a payload shorter than struct ifaddrmsg) ends the
// datagram's events with an error naming it, after the events before it.
func TestAddrEventsUnreadable(t *testing.T) {
	good := nlMessage(unix.RTM_NEWADDR, kernelAddr(unix.AF_INET, 24, unix.RT_SCOPE_UNIVERSE, 7, net.IP{198, 18, 0, 1}, net.IP{198, 18, 0, 1}, net.IP{198, 18, 0, 255}, "ext0", unix.IFA_F_PERMANENT))
	hdr := unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: 24, Index: 7}
	for _, c := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"payload of 4 bytes", nlMessage(unix.RTM_NEWADDR, []byte{unix.AF_INET, 24, 0, 0}), "unreadable address message (type 20, 4 bytes 02180000): address message of 4 bytes"},
		{"no address", nlMessage(unix.RTM_DELADDR, ifAddrMessage(hdr, []uint16{unix.IFA_FLAGS}, [][]byte{{0x80, 0, 0, 0}})),
			"unreadable address message (type 21, 16 bytes 02180000070000000800080080000000): no address in it"},
		{"not an address message", nlMessage(unix.RTM_NEWROUTE, make([]byte, 12)), "unreadable address message (type 24, 12 bytes"},
	} {
		dgram := slices.Clip(append(append([]byte(nil), good...), c.msg...))
		msgs, err := syscall.ParseNetlinkMessage(dgram)
		if err != nil {
			t.Fatalf("ParseNetlinkMessage(%x): %v", dgram, err)
		}
		evs, err := addrEvents(msgs)
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Fatalf("%s: addrEvents(%x): error %v, want one beginning %q", c.name, dgram, err, c.want)
		}
		if len(evs) != 1 || evs[0].LinkAddress.String() != "198.18.0.1/24" || evs[0].LinkIndex != 7 || !evs[0].NewAddr {
			t.Fatalf("%s: addrEvents(%x): events %+v, want the first message's only", c.name, dgram, evs)
		}
	}
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
