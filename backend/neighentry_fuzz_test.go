package backend

import (
	"net"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// FuzzParseNeighEntry: parseNeighEntry, what the neighbour and FDB dumps of
// a pass read each entry with, reads a message as netlink's NeighDeserialize
// and ndaVNI read it, the parts the passes and the neighbour events use:
// link, family, state, type, flags, NDA_DST, the MAC of NDA_LLADDR, NDA_VNI
// and VNI 0 told from none. It fails where NeighDeserialize fails, on a
// message shorter than its header and on an NDA_VNI of fewer than 4 bytes
// (which NeighDeserialize panics on or reads past), and it never panics. Messages are arbitrary bytes (raw) and
// FDB entries written as the kernel writes them, of arbitrary attributes
// (stream, read by attrStream).
func FuzzParseNeighEntry(f *testing.F) {
	mac := net.HardwareAddr{0x3e, 0x1b, 0x7c, 0x00, 0x00, 0x01}
	for _, m := range [][]byte{
		neighMessage(5, net.IP{10, 244, 2, 0}, mac),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, nil),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, []byte{0, 0, 0, 0}),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 4789, []byte{2, 0, 0, 0}),
		fdbEntry(9, mac, net.ParseIP("2001:db8::2"), 0, nil),
		{7, 0, 0, 0, 9, 0, 0, 0, 0x80, 0, 2, 0, 6, 0, 7, 0, 1, 0},
		{7, 0, 0, 0},
	} {
		f.Add(m, []byte{})
	}
	f.Add([]byte{}, []byte{unix.NDA_LLADDR, 6, 1, 2, 3, 4, 5, 6, unix.NDA_DST, 4, 198, 18, 0, 2, unix.NDA_VNI, 4, 0, 0, 0, 0})
	f.Add([]byte{}, []byte{unix.NDA_LLADDR, 4, 1, 2, 3, 4, unix.NDA_DST, 4, 198, 18, 0, 2, unix.NDA_DST, 4, 198, 18, 0, 3})
	// What the fuzzer found first: an NDA_VNI of 2 bytes, a link index
	// past int32, a 4-byte NDA_LLADDR after a MAC.
	f.Add([]byte{}, []byte{unix.NDA_VNI, 2, 0, 0})
	f.Add([]byte("0000000\xd00000"), []byte{})
	f.Add([]byte{}, []byte{unix.NDA_LLADDR, 6, 1, 2, 3, 4, 5, 6, unix.NDA_LLADDR, 4, 198, 18, 0, 2})
	f.Fuzz(func(t *testing.T, raw, stream []byte) {
		checkNeighEntry(t, raw)
		hdr := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: 9, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
		types, values := attrStream(stream)
		checkNeighEntry(t, ndMessage(hdr, types, values))
	})
}

func checkNeighEntry(t *testing.T, m []byte) {
	t.Helper()
	var e neighEntry
	ok := parseNeighEntry(m, &e) == nil
	if len(m) < unix.SizeofNdMsg {
		if ok {
			t.Fatalf("parseNeighEntry(%x), shorter than its header: true", m)
		}
		return
	}
	// NeighDeserialize asks the kernel about the link of a 16-byte
	// NDA_LLADDR: not here. It reads past an NDA_VNI of fewer than 4
	// bytes, where parseNeighEntry fails.
	attrs, _ := routeAttrs(m[unix.SizeofNdMsg:])
	for _, a := range attrs {
		if a.Attr.Type == unix.NDA_LLADDR && len(a.Value) == 16 {
			return
		}
		if a.Attr.Type == unix.NDA_VNI && len(a.Value) < 4 {
			if ok {
				t.Fatalf("parseNeighEntry(%x), with an NDA_VNI of %d bytes: true", m, len(a.Value))
			}
			return
		}
	}
	n, err, panicked := neighDeserialize(m)
	switch {
	case panicked:
		return
	case err != nil:
		if ok {
			t.Fatalf("parseNeighEntry(%x) = true, %+v; NeighDeserialize: %v", m, e, err)
		}
		return
	case !ok:
		t.Fatalf("parseNeighEntry(%x) = false; NeighDeserialize reads %+v", m, n)
	}
	gotMAC, gotOK := MACFromHardwareAddr(e.LLAddr)
	wantMAC, wantOK := MACFromHardwareAddr(n.HardwareAddr)
	vni, named := ndaVNI(m)
	// The IPs compared byte for byte (as strings, which staticcheck takes
	// for no mistake): net.IP.Equal takes a 4- and a 16-byte IPv4 alike.
	if e.LinkIndex != n.LinkIndex || e.Family != n.Family || e.State != n.State || e.Type != n.Type || e.Flags != n.Flags ||
		string(e.IP) != string(n.IP) || gotMAC != wantMAC || gotOK != wantOK || e.VNI != n.VNI || e.VNIZero != (named && vni == 0) {
		t.Fatalf("parseNeighEntry(%x) = %+v; NeighDeserialize reads %+v, ndaVNI %d, %v", m, e, n, vni, named)
	}
}

// neighDeserialize is netlink.NeighDeserialize(m), and whether it panicked.
func neighDeserialize(m []byte) (n *netlink.Neigh, err error, panicked bool) {
	defer func() { panicked = recover() != nil }()
	n, err = netlink.NeighDeserialize(m)
	return n, err, false
}
