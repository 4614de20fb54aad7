package backend

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	_ "unsafe" // go:linkname

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// netlinkDeserializeRoute is netlink v1.3's reader of route messages, which
// it does not export: the reader parseRoute replaces in the passes' dumps,
// and so what FuzzParseRoute compares it with.
//
//go:linkname netlinkDeserializeRoute github.com/vishvananda/netlink.deserializeRoute
func netlinkDeserializeRoute(m []byte) (netlink.Route, error)

// FuzzParseRoute: parseRoute, the reader of the passes' route dumps
// (AppendPassRoutes), reads a message that netlink's deserializeRoute reads
// (with no error and no panic) as it does, in the fields routeFromMessage
// sets (showRoute), and keep judges it as passRoute judges netlink's route;
// route copies the message's bytes. It never panics. Messages are
// arbitrary bytes (raw) and IPv4 routes of arbitrary attributes as the
// kernel writes them (stream, read by attrStream). MPLS routes (family 28),
// which deserializeRoute reads otherwise and an IPv4 dump never holds, are
// left out, and so are those it misreads (misreads).
func FuzzParseRoute(f *testing.F) {
	hdr := rtMsg{Family: unix.AF_INET, DstLen: 24, Table: unix.RT_TABLE_MAIN, Protocol: 74, Type: unix.RTN_UNICAST}
	dst := []byte{10, 244, 6, 0}
	for _, m := range [][]byte{
		kernelRoute(netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddr("198.18.0.5"), 7),
		rtMessage(hdr, []uint16{unix.RTA_DST, unix.RTA_METRICS, unix.RTA_MULTIPATH},
			[][]byte{dst, {8, 0, unix.RTAX_MTU, 0, 0x78, 5, 0, 0}, {16, 0, 0, 0, 7, 0, 0, 0, 8, 0, unix.RTA_GATEWAY, 0, 198, 18, 0, 7}}),
		rtMessage(rtMsg{Family: unix.AF_INET, Table: 100, Protocol: 3, Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST},
			[]uint16{unix.RTA_TABLE, unix.RTA_OIF, unix.RTA_VIA}, [][]byte{{100, 0, 0, 0}, {7, 0, 0, 0}, append([]byte{unix.AF_INET6, 0}, net.ParseIP("2001:db8::2")...)}),
		{unix.AF_INET, 24, 0, 0},
	} {
		f.Add(m, []byte{})
	}
	f.Add([]byte{}, []byte{unix.RTA_DST, 4, 10, 244, 1, 0, unix.RTA_GATEWAY, 4, 198, 18, 0, 2, unix.RTA_OIF, 4, 7, 0, 0, 0})
	f.Add([]byte{}, []byte{unix.RTA_DST, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 244, 1, 0, unix.RTA_PRIORITY, 4, 5, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw, stream []byte) {
		checkParseRoute(t, raw)
		types, values := attrStream(stream)
		checkParseRoute(t, rtMessage(rtMsg{Family: unix.AF_INET, DstLen: 24, Table: unix.RT_TABLE_MAIN, Protocol: 74, Type: unix.RTN_UNICAST}, types, values))
	})
}

func checkParseRoute(t *testing.T, m []byte) {
	t.Helper()
	m = bytes.Clone(m) // changed below
	var r rtRoute
	err := parseRoute(m, &r)
	if len(m) >= unix.SizeofRtMsg && m[0] == 28 {
		return
	}
	want, wantErr, panicked := deserializeRoute(m)
	if panicked || wantErr != nil || misreads(m) {
		return
	}
	if err != nil {
		t.Fatalf("parseRoute(%x): %v; deserializeRoute reads %s", m, err, showRoute(want))
	}
	got := r.route()
	if showRoute(got) != showRoute(want) {
		t.Fatalf("parseRoute(%x) reads\n%s\nwant, as deserializeRoute,\n%s", m, showRoute(got), showRoute(want))
	}
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, n := range []netip.Prefix{network, {}} {
		if k, w := r.keep(7, n), passRoute(&want, 7, n); k != w {
			t.Fatalf("parseRoute(%x): keep(7, %v) = %v, passRoute of deserializeRoute's %v", m, n, k, w)
		}
	}
	// route copied what it holds out of the message.
	shown := showRoute(got)
	for i := range m {
		m[i] ^= 0xff
	}
	if s := showRoute(got); s != shown {
		t.Fatalf("parseRoute: the route changed with its message: %s, was %s", s, shown)
	}
}

// deserializeRoute is netlinkDeserializeRoute(m), and whether it panicked.
func deserializeRoute(m []byte) (r netlink.Route, err error, panicked bool) {
	defer func() { panicked = recover() != nil }()
	r, err = netlinkDeserializeRoute(m)
	return r, err, false
}

// showRoute is r in the fields routeFromMessage sets, byte for byte.
func showRoute(r netlink.Route) string {
	s := fmt.Sprintf("dst=%s gw=%x src=%x dev#%d scope=%d proto=%d table=%d type=%d tos=%d flags=%#x metric=%d family=%d via=%s mtu=%d advmss=%d features=%d initcwnd=%d initrwnd=%d",
		showIPNet(r.Dst), []byte(r.Gw), []byte(r.Src), r.LinkIndex, r.Scope, r.Protocol, r.Table, r.Type, r.Tos, r.Flags, r.Priority, r.Family, showVia(r.Via), r.MTU, r.AdvMSS, r.Features, r.InitCwnd, r.InitRwnd)
	if r.Gw != nil {
		s += " (gw set)"
	}
	for _, nh := range r.MultiPath {
		s += fmt.Sprintf(" nexthop(dev#%d hops=%d flags=%#x gw=%x via=%s)", nh.LinkIndex, nh.Hops, nh.Flags, []byte(nh.Gw), showVia(nh.Via))
	}
	return s
}

func showIPNet(n *net.IPNet) string {
	if n == nil {
		return "none"
	}
	return fmt.Sprintf("%x/%x(mask nil: %v)", []byte(n.IP), []byte(n.Mask), n.Mask == nil)
}

func showVia(d netlink.Destination) string {
	switch v := d.(type) {
	case nil:
		return "none"
	case *netlink.Via:
		return fmt.Sprintf("%d:%x", v.AddrFamily, []byte(v.Addr))
	}
	return fmt.Sprintf("%T", d)
}

// misreads reports whether deserializeRoute reads m, a route message,
// past the end of an attribute's value (into its padding or the next
// attribute), where it reads a fixed size: an RTA_OIF, RTA_IIF,
// RTA_PRIORITY, RTA_FLOW, RTA_TABLE or metric of fewer than 4 bytes, an
// RTA_ENCAP_TYPE of fewer than 2, in the message or a next hop. parseRoute
// refuses those it reads, and the kernel writes none.
func misreads(m []byte) bool {
	attrs, err := RouteAttrs(m[unix.SizeofRtMsg:])
	if err != nil {
		return false
	}
	for _, a := range attrs {
		switch a.Attr.Type {
		case unix.RTA_OIF, unix.RTA_IIF, unix.RTA_PRIORITY, unix.RTA_FLOW, unix.RTA_TABLE:
			if len(a.Value) < 4 {
				return true
			}
		case unix.RTA_ENCAP_TYPE:
			if len(a.Value) < 2 {
				return true
			}
		case unix.RTA_METRICS:
			metrics, _ := RouteAttrs(a.Value)
			for _, x := range metrics {
				if x.Attr.Type != unix.RTAX_CC_ALGO && len(x.Value) < 4 {
					return true
				}
			}
		case unix.RTA_MULTIPATH:
			for v := a.Value; len(v) >= unix.SizeofRtNexthop; {
				l := int(binary.NativeEndian.Uint16(v))
				if l < unix.SizeofRtNexthop || l > len(v) {
					break
				}
				nh, _ := RouteAttrs(v[unix.SizeofRtNexthop:l])
				for _, x := range nh {
					if x.Attr.Type == unix.RTA_ENCAP_TYPE && len(x.Value) < 2 {
						return true
					}
				}
				v = v[l:]
			}
		}
	}
	return false
}
