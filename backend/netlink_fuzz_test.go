package backend

import (
	"encoding/binary"
	"fmt"
	"net"
	"slices"
	"sort"
	"syscall"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// routeAttrs is what nl.ParseRouteAttr, netlink's own reader of the
// attributes after a message's header, reads of b, and whether it reads
// them all. Where b ends with an attribute whose length is not a multiple
// of 4 it panics (the kernel pads every attribute, but reads such a last
// one, nla_ok): b is read padded then.
func routeAttrs(b []byte) ([]syscall.NetlinkRouteAttr, bool) {
	attrs, panicked, err := parseRouteAttr(b)
	if panicked {
		attrs, _, err = parseRouteAttr(append(slices.Clip(b), make([]byte, -len(b)&3)...))
	}
	return attrs, err == nil
}

func parseRouteAttr(b []byte) (attrs []syscall.NetlinkRouteAttr, panicked bool, err error) {
	defer func() { panicked = recover() != nil }()
	attrs, err = nl.ParseRouteAttr(b)
	return attrs, false, err
}

// attrStream turns b into attributes to write: a type byte, a length byte
// and that many value bytes (fewer at the end), until b ends.
func attrStream(b []byte) (types []uint16, values [][]byte) {
	for len(b) >= 2 {
		typ, n := uint16(b[0]), min(int(b[1]), len(b)-2)
		types, values = append(types, typ), append(values, b[2:2+n])
		b = b[2+n:]
	}
	return types, values
}

// ifAddrMessage writes an RTM_NEWADDR payload as the kernel does
// (inet_fill_ifaddr, inet6_fill_ifaddr): the header, then each attribute
// padded to 4 bytes.
func ifAddrMessage(hdr unix.IfAddrmsg, types []uint16, values [][]byte) []byte {
	msg := nl.IfAddrmsg{IfAddrmsg: hdr}
	m := append([]byte(nil), msg.Serialize()...)
	for i, typ := range types {
		m = append(m, nl.NewRtAttr(int(typ), values[i]).Serialize()...)
	}
	return m
}

// kernelAddr is an address as Linux 6.x reports it: IFA_ADDRESS, IFA_LOCAL
// (IPv4, or a point-to-point IPv6 address), IFA_BROADCAST, IFA_LABEL (IPv4),
// IFA_FLAGS and IFA_CACHEINFO.
func kernelAddr(family, prefixLen, scope uint8, index uint32, local, address, brd net.IP, label string, flags uint32) []byte {
	var types []uint16
	var values [][]byte
	add := func(typ uint16, v []byte) {
		if v != nil {
			types, values = append(types, typ), append(values, v)
		}
	}
	add(unix.IFA_ADDRESS, address)
	add(unix.IFA_LOCAL, local)
	add(unix.IFA_BROADCAST, brd)
	if label != "" {
		add(unix.IFA_LABEL, append([]byte(label), 0))
	}
	add(unix.IFA_FLAGS, binary.NativeEndian.AppendUint32(nil, flags))
	ci := nl.IfaCacheInfo{IfaCacheinfo: unix.IfaCacheinfo{Prefered: 0xffffffff, Valid: 0xffffffff, Cstamp: 1234, Tstamp: 1234}}
	add(unix.IFA_CACHEINFO, ci.Serialize())
	return ifAddrMessage(unix.IfAddrmsg{Family: family, Prefixlen: prefixLen, Flags: uint8(flags), Scope: scope, Index: index}, types, values)
}

// inside reports whether v is nil or lies within m.
func inside(v, m []byte) bool {
	if len(v) == 0 {
		return true
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(m)))
	p := uintptr(unsafe.Pointer(unsafe.SliceData(v)))
	return p >= start && p+uintptr(len(v)) <= start+uintptr(len(m))
}

// printAddr prints what netlink's AddrList says of an address.
func printAddr(a netlink.Addr) string {
	return fmt.Sprintf("%v peer=%v brd=%v label=%q flags=%#x scope=%d link=%d lft=%d/%d",
		a.IPNet, a.Peer, a.Broadcast, a.Label, a.Flags, a.Scope, a.LinkIndex, a.PreferedLft, a.ValidLft)
}

// netlinkAddr is the Addr that netlink's AddrList (v1.3.1, parseAddr)
// makes of attrs, the attributes of a message with header hdr whose
// addresses have 4 or 16 bytes and which has IFA_FLAGS, IFA_LABEL with its
// NUL and an IFA_CACHEINFO of its full length where it has them, as the
// kernel writes them (parseAddr panics on others).
func netlinkAddr(hdr unix.IfAddrmsg, attrs []syscall.NetlinkRouteAttr) netlink.Addr {
	a := netlink.Addr{LinkIndex: int(hdr.Index), Scope: int(hdr.Scope)}
	var local, dst *net.IPNet
	for _, attr := range attrs {
		v := attr.Value
		switch attr.Attr.Type {
		case unix.IFA_ADDRESS:
			dst = &net.IPNet{IP: v, Mask: net.CIDRMask(int(hdr.Prefixlen), 8*len(v))}
		case unix.IFA_LOCAL:
			local = &net.IPNet{IP: v, Mask: net.CIDRMask(8*len(v), 8*len(v))}
		case unix.IFA_BROADCAST:
			a.Broadcast = v
		case unix.IFA_LABEL:
			a.Label = string(v[:len(v)-1])
		case unix.IFA_FLAGS:
			a.Flags = int(binary.NativeEndian.Uint32(v))
		case unix.IFA_CACHEINFO:
			ci := nl.DeserializeIfaCacheInfo(v)
			a.PreferedLft, a.ValidLft = int(ci.Prefered), int(ci.Valid)
		}
	}
	switch {
	case local == nil:
		a.IPNet = dst
	case hdr.Family == unix.AF_INET && dst != nil && local.IP.Equal(dst.IP):
		a.IPNet = dst
	default:
		a.IPNet, a.Peer = local, dst
	}
	return a
}

// FuzzParseIfAddr: parseIfAddr, which reads the address dumps of a pass
// (eachAddr) in place of netlink's AddrList, refuses exactly the messages
// whose attributes netlink cannot read either; what it accepts holds, for
// each attribute, the value of its last occurrence, read in place (a slice
// of the message), and the label without its NUL. For a message written as
// the kernel writes one (addresses of the family's length, a prefix length
// within it, IFA_FLAGS, a label with its NUL, full cache information),
// ifAddr.netlink says what AddrList says, address, peer and all.
func FuzzParseIfAddr(f *testing.F) {
	v4 := func(s string) net.IP { return net.ParseIP(s).To4() }
	v6 := func(s string) net.IP { return net.ParseIP(s).To16() }
	// As `ip -d addr` shows them on a host: eth0's address, a secondary,
	// a point-to-point one, flannel.1's /32, IPv6 global and link-local.
	for _, m := range [][]byte{
		kernelAddr(unix.AF_INET, 24, unix.RT_SCOPE_UNIVERSE, 2, v4("198.18.0.1"), v4("198.18.0.1"), v4("198.18.0.255"), "eth0", 0x80),
		kernelAddr(unix.AF_INET, 24, unix.RT_SCOPE_UNIVERSE, 2, v4("198.18.0.7"), v4("198.18.0.7"), v4("198.18.0.255"), "eth0", unix.IFA_F_SECONDARY|unix.IFA_F_PERMANENT),
		kernelAddr(unix.AF_INET, 24, unix.RT_SCOPE_UNIVERSE, 3, v4("198.18.5.1"), v4("198.18.6.0"), nil, "ext0:p2p", unix.IFA_F_PERMANENT|unix.IFA_F_NOPREFIXROUTE),
		kernelAddr(unix.AF_INET, 32, unix.RT_SCOPE_UNIVERSE, 9, v4("10.244.3.0"), v4("10.244.3.0"), nil, "flannel.1", unix.IFA_F_PERMANENT),
		kernelAddr(unix.AF_INET6, 64, unix.RT_SCOPE_UNIVERSE, 2, nil, v6("2001:db8::1"), nil, "", unix.IFA_F_PERMANENT),
		kernelAddr(unix.AF_INET6, 64, unix.RT_SCOPE_LINK, 2, nil, v6("fe80::1"), nil, "", unix.IFA_F_PERMANENT),
		kernelAddr(unix.AF_INET6, 64, unix.RT_SCOPE_UNIVERSE, 4, v6("2001:db8::5"), v6("2001:db8:1::"), nil, "", unix.IFA_F_PERMANENT),
		{2, 24, 0, 0, 2, 0, 0, 0},
		{2, 24, 0, 0, 2, 0, 0, 0, 5, 0, 2, 0, 1},
		{2, 24, 0, 0, 2, 0, 0, 0, 9, 0, 3, 0, 'e', 't', 'h'},
		{2, 24, 0, 0, 2, 0, 0, 0, 3, 0},
		{2, 24},
	} {
		f.Add(m, []byte{})
	}
	f.Add([]byte{}, []byte{unix.IFA_LOCAL, 4, 198, 18, 0, 1, unix.IFA_ADDRESS, 4, 198, 18, 0, 1, unix.IFA_FLAGS, 4, 0x80, 0, 0, 0, unix.IFA_LABEL, 5, 'e', 't', 'h', '0', 0})
	f.Add([]byte{10, 64, 0, 0, 2, 0, 0, 0}, []byte{unix.IFA_ADDRESS, 16, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, unix.IFA_FLAGS, 4, 0x80, 0, 0, 0, unix.IFA_ADDRESS, 16, 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, raw, stream []byte) {
		var a ifAddr
		err := parseIfAddr(raw, &a)
		attrs, ok := []syscall.NetlinkRouteAttr(nil), len(raw) >= unix.SizeofIfAddrmsg
		if ok {
			attrs, ok = routeAttrs(raw[unix.SizeofIfAddrmsg:])
		}
		if (err == nil) != ok {
			t.Fatalf("parseIfAddr(%x): %v; netlink reads its attributes: %v", raw, err, ok)
		}
		if err == nil {
			checkIfAddr(t, raw, &a, attrs)
		}

		// The header of raw, or IPv4's, with the attributes stream
		// names, written as the kernel writes them.
		var hdr unix.IfAddrmsg
		if len(raw) >= unix.SizeofIfAddrmsg {
			hdr = *(*unix.IfAddrmsg)(unsafe.Pointer(&raw[0]))
		} else {
			hdr = unix.IfAddrmsg{Family: unix.AF_INET, Prefixlen: 24, Index: 2}
		}
		types, values := attrStream(stream)
		m := ifAddrMessage(hdr, types, values)
		if err := parseIfAddr(m, &a); err != nil {
			t.Fatalf("parseIfAddr of a message written as the kernel writes one (%x): %v", m, err)
		}
		attrs, _ = routeAttrs(m[unix.SizeofIfAddrmsg:])
		checkIfAddr(t, m, &a, attrs)

		bits := 32
		if hdr.Family == unix.AF_INET6 {
			bits = 128
		} else if hdr.Family != unix.AF_INET {
			return
		}
		if int(hdr.Prefixlen) > bits {
			return
		}
		hasFlags := false
		for _, attr := range attrs {
			v := attr.Value
			switch attr.Attr.Type {
			case unix.IFA_ADDRESS, unix.IFA_LOCAL:
				if len(v) != bits/8 {
					return
				}
			case unix.IFA_LABEL:
				if len(v) == 0 || v[len(v)-1] != 0 {
					return
				}
			case unix.IFA_FLAGS:
				if len(v) < 4 {
					return
				}
				hasFlags = true
			case unix.IFA_CACHEINFO:
				if len(v) < unix.SizeofIfaCacheinfo {
					return
				}
			}
		}
		if !hasFlags {
			return // netlink then reads no flags; parseIfAddr the header's
		}
		if got, want := printAddr(a.netlink()), printAddr(netlinkAddr(hdr, attrs)); got != want {
			t.Fatalf("address message %x:\n got %s\nwant %s (netlink's AddrList)", m, got, want)
		}
	})
}

// checkIfAddr checks a, what parseIfAddr read of m, against attrs, netlink's
// reading of m's attributes.
func checkIfAddr(t *testing.T, m []byte, a *ifAddr, attrs []syscall.NetlinkRouteAttr) {
	t.Helper()
	if a.IfAddrmsg != *(*unix.IfAddrmsg)(unsafe.Pointer(&m[0])) {
		t.Fatalf("parseIfAddr(%x): header %+v", m, a.IfAddrmsg)
	}
	var local, address, brd, label, cache []byte
	flags := uint32(a.IfAddrmsg.Flags)
	for _, attr := range attrs {
		v := attr.Value
		switch attr.Attr.Type {
		case unix.IFA_LOCAL:
			local = v
		case unix.IFA_ADDRESS:
			address = v
		case unix.IFA_BROADCAST:
			brd = v
		case unix.IFA_LABEL:
			if len(v) > 0 && v[len(v)-1] == 0 {
				v = v[:len(v)-1]
			}
			label = v
		case unix.IFA_FLAGS:
			if len(v) >= 4 {
				flags = binary.NativeEndian.Uint32(v)
			}
		case unix.IFA_CACHEINFO:
			cache = v
		}
	}
	for _, c := range []struct {
		what      string
		got, want []byte
	}{{"IFA_LOCAL", a.local, local}, {"IFA_ADDRESS", a.address, address}, {"IFA_BROADCAST", a.broadcast, brd}, {"IFA_LABEL", a.label, label}, {"IFA_CACHEINFO", a.cache, cache}} {
		if string(c.got) != string(c.want) || (c.got == nil) != (c.want == nil) || !inside(c.got, m) {
			t.Fatalf("parseIfAddr(%x): %s %x, want %x, a slice of the message", m, c.what, c.got, c.want)
		}
	}
	if a.flags != flags {
		t.Fatalf("parseIfAddr(%x): flags %#x, want %#x", m, a.flags, flags)
	}
	own, peer := a.prefix()
	if peer.IsValid() && !own.IsSingleIP() {
		t.Fatalf("parseIfAddr(%x): %s with peer %s: an address with a peer has no prefix of its own", m, own, peer)
	}
	na := a.netlink()
	if na.LinkIndex != int(a.Index) || na.Scope != int(a.Scope) || na.Label != string(a.label) || na.Flags != int(a.flags) {
		t.Fatalf("parseIfAddr(%x): netlink() %s", m, printAddr(na))
	}
}

// ndMessage writes an RTM_NEWNEIGH payload as the kernel does
// (neigh_fill_info, vxlan_fdb_info): the header, then each attribute padded
// to 4 bytes.
func ndMessage(hdr netlink.Ndmsg, types []uint16, values [][]byte) []byte {
	m := append([]byte(nil), hdr.Serialize()...)
	for i, typ := range types {
		m = append(m, nl.NewRtAttr(int(typ), values[i]).Serialize()...)
	}
	return m
}

// fdbEntry is a vxlan device's FDB entry as vxlan_fdb_info writes it:
// NDA_LLADDR, NDA_DST, NDA_PORT (network order) and NDA_VNI when not the
// device's, NDA_CACHEINFO.
func fdbEntry(index uint32, mac net.HardwareAddr, dst net.IP, port uint16, vni []byte) []byte {
	types := []uint16{unix.NDA_LLADDR, unix.NDA_DST}
	values := [][]byte{mac, dst}
	if port != 0 {
		types, values = append(types, unix.NDA_PORT), append(values, binary.BigEndian.AppendUint16(nil, port))
	}
	if vni != nil {
		types, values = append(types, unix.NDA_VNI), append(values, vni)
	}
	types, values = append(types, unix.NDA_CACHEINFO), append(values, make([]byte, 16))
	hdr := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: index, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
	return ndMessage(hdr, types, values)
}

// ndaVNI returns the NDA_VNI attribute of m, the payload of an RTM_NEWNEIGH
// message, and whether m has one: what parseNeighEntry's VNIZero is checked
// against (FuzzParseNeighEntry), written plainly.
func ndaVNI(m []byte) (uint32, bool) {
	if len(m) < unix.SizeofNdMsg {
		return 0, false
	}
	native := nl.NativeEndian()
	for b := m[unix.SizeofNdMsg:]; len(b) >= unix.SizeofRtAttr; {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return 0, false
		}
		if native.Uint16(b[2:])&nl.NLA_TYPE_MASK == unix.NDA_VNI && l >= unix.SizeofRtAttr+4 {
			return native.Uint32(b[unix.SizeofRtAttr:]), true
		}
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return 0, false
}

// FuzzNDAVNI: ndaVNI, which parseNeighEntry's telling an FDB entry
// (ListFDBOn) or a neighbour event (neighEvents) of VNI 0 from one with the
// device's is checked against, finds the
// first NDA_VNI of a message, whatever flags its type carries, as netlink
// reads the message's attributes; where netlink cannot read them all, what
// it finds is the VNI of a well-formed attribute chain from the header. For
// a message written as the kernel writes one, it finds the first NDA_VNI of
// 4 bytes or more, and netlink's NeighDeserialize reads the same VNI where
// it is the only one.
func FuzzNDAVNI(f *testing.F) {
	mac := net.HardwareAddr{0x3e, 0x1b, 0x7c, 0x00, 0x00, 0x01}
	for _, m := range [][]byte{
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, nil),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, []byte{0, 0, 0, 0}),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 0, []byte{2, 0, 0, 0}),
		fdbEntry(9, mac, net.IP{198, 18, 0, 2}, 4789, nil),
		fdbEntry(9, net.HardwareAddr{0, 0, 0, 0, 0, 0}, net.IP{198, 18, 0, 3}, 0, nil),
		fdbEntry(9, mac, net.ParseIP("2001:db8::2"), 0, []byte{0, 0, 0, 0}),
		{7, 0, 0, 0, 9, 0, 0, 0, 0x80, 0, 2, 0, 8, 0, 7, 0},
		{7, 0, 0, 0, 9, 0, 0, 0, 0x80, 0, 2, 0, 8, 0, 7, 0x80, 0, 0, 0, 0},
		{7, 0, 0, 0, 9, 0, 0, 0, 0x80, 0, 2, 0, 6, 0, 7, 0, 1, 0},
		{7, 0, 0, 0},
	} {
		f.Add(m, []byte{})
	}
	f.Add([]byte{}, []byte{unix.NDA_LLADDR, 6, 1, 2, 3, 4, 5, 6, unix.NDA_VNI, 4, 0, 0, 0, 0})
	f.Add([]byte{}, []byte{unix.NDA_VNI, 2, 0, 0, unix.NDA_VNI, 4, 1, 0, 0, 0, unix.NDA_VNI, 4, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw, stream []byte) {
		vni, has := ndaVNI(raw)
		if !has && vni != 0 {
			t.Fatalf("ndaVNI(%x) = %d, false", raw, vni)
		}
		if len(raw) < unix.SizeofNdMsg {
			if has {
				t.Fatalf("ndaVNI(%x) = %d of a message shorter than its header", raw, vni)
			}
		} else {
			attrs, ok := routeAttrs(raw[unix.SizeofNdMsg:])
			if ok {
				want, wantHas := firstVNI(attrs)
				if vni != want || has != wantHas {
					t.Fatalf("ndaVNI(%x) = %d, %v; netlink's attributes say %d, %v", raw, vni, has, want, wantHas)
				}
			} else if has && !vniOnChain(raw, vni) {
				t.Fatalf("ndaVNI(%x) = %d, on no chain of attributes", raw, vni)
			}
		}

		hdr := netlink.Ndmsg{Family: unix.AF_BRIDGE, Index: 9, State: netlink.NUD_PERMANENT, Flags: netlink.NTF_SELF}
		types, values := attrStream(stream)
		m := ndMessage(hdr, types, values)
		vni, has = ndaVNI(m)
		var want uint32
		wantHas, count := false, 0
		for i, typ := range types {
			if typ&nl.NLA_TYPE_MASK != unix.NDA_VNI {
				continue
			}
			count++
			if !wantHas && len(values[i]) >= 4 {
				want, wantHas = binary.NativeEndian.Uint32(values[i]), true
			}
		}
		if vni != want || has != wantHas {
			t.Fatalf("ndaVNI of a message written as the kernel writes one (%x) = %d, %v, want %d, %v", m, vni, has, want, wantHas)
		}
		if count != 1 || !wantHas {
			return
		}
		for i, typ := range types {
			// NeighDeserialize panics on these short, and asks the
			// kernel of the link of a 16-byte NDA_LLADDR.
			short := map[uint16]int{netlink.NDA_FLAGS_EXT: 4, unix.NDA_VLAN: 2, unix.NDA_MASTER: 4, unix.NDA_CACHEINFO: 12, unix.NDA_VNI: 4}
			if n, ok := short[typ]; ok && len(values[i]) < n || typ == unix.NDA_LLADDR && len(values[i]) == 16 || typ&^nl.NLA_TYPE_MASK != 0 {
				return
			}
		}
		n, err := netlink.NeighDeserialize(m)
		if err != nil {
			t.Fatalf("NeighDeserialize(%x): %v", m, err)
		}
		if n.VNI != int(vni) {
			t.Fatalf("ndaVNI(%x) = %d, NeighDeserialize reads VNI %d", m, vni, n.VNI)
		}
	})
}

// firstVNI is the value of the first NDA_VNI of 4 bytes or more in attrs.
func firstVNI(attrs []syscall.NetlinkRouteAttr) (uint32, bool) {
	for _, a := range attrs {
		if a.Attr.Type&nl.NLA_TYPE_MASK == unix.NDA_VNI && len(a.Value) >= 4 {
			return binary.NativeEndian.Uint32(a.Value), true
		}
	}
	return 0, false
}

// vniOnChain reports whether m, a message whose attributes netlink cannot
// read all of, begins with attributes that it reads, the last of them an
// NDA_VNI of 4 bytes or more holding vni, the first such. That is m up to
// the end of the attribute ndaVNI found: the shortest prefix in which it
// finds it, as it reads no further.
func vniOnChain(m []byte, vni uint32) bool {
	n := unix.SizeofNdMsg + sort.Search(len(m)-unix.SizeofNdMsg+1, func(i int) bool {
		_, has := ndaVNI(m[:unix.SizeofNdMsg+i])
		return has
	})
	if v, has := ndaVNI(m[:n]); !has || v != vni {
		return false
	}
	attrs, ok := routeAttrs(m[unix.SizeofNdMsg:n])
	if !ok || len(attrs) == 0 {
		return false
	}
	v, has := firstVNI(attrs)
	last := attrs[len(attrs)-1]
	return has && v == vni && last.Attr.Type&nl.NLA_TYPE_MASK == unix.NDA_VNI && len(last.Value) >= 4
}
