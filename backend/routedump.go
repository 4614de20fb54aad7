package backend

import (
	"bytes"
	"errors"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// rtRoute is a route message of a dump as a pass reads it (parseRoute),
// its byte slices pointing into the message: a route the pass does not
// keep costs no allocation, where netlink's deserializeRoute allocates its
// attributes' slice, a Route and a net.IPNet for each.
type rtRoute struct {
	family, dstLen, tos, table, protocol, scope, typ uint8
	flags                                            uint32

	dst, gw, src []byte // RTA_DST, RTA_GATEWAY, RTA_PREFSRC; nil when none
	hasDst       bool
	oif, prio    uint32 // RTA_OIF, RTA_PRIORITY
	rtaTable     uint32 // RTA_TABLE, when hasTable
	hasTable     bool
	via          []byte // RTA_VIA
	// The message's attributes, from which route reads the RTA_MULTIPATH
	// next hops again when multipath: a slice of their values cost an
	// allocation for each multipath route read, kept or not.
	attrs     []byte
	multipath bool
	// RTA_METRICS: RTAX_MTU, RTAX_ADVMSS, RTAX_FEATURES, RTAX_INITCWND,
	// RTAX_INITRWND.
	mtu, advMSS, features, initCwnd, initRwnd uint32
}

// Why parseRoute cannot read a message.
var (
	errRtmsgShort = errors.New("shorter than struct rtmsg")
	errRouteAttr  = errors.New("an attribute's length is short of its header or past its end")
	errRouteU32   = errors.New("an attribute of fewer than 4 bytes where netlink reads a uint32")
	errRouteVia   = errors.New("an RTA_VIA netlink cannot read")
	errNexthop    = errors.New("an RTA_MULTIPATH next hop netlink cannot read")
)

// parseRoute reads into r m, the payload of an RTM_NEWROUTE message, as
// netlink's deserializeRoute reads it in the fields routeFromMessage sets
// (those the passes and the events' filters read), or says why it cannot.
// It fails where deserializeRoute fails on those fields, and where it
// panics (a payload shorter than struct rtmsg, an RTA_OIF, RTA_PRIORITY,
// RTA_TABLE or metric of fewer than 4 bytes, a next hop whose length is
// shorter than its header); it reads a last attribute not padded to 4 bytes,
// on which deserializeRoute panics, as the kernel does. FuzzParseRoute
// compares the two.
func parseRoute(m []byte, r *rtRoute) error {
	if len(m) < unix.SizeofRtMsg {
		return errRtmsgShort
	}
	native := nl.NativeEndian()
	*r = rtRoute{family: m[0], dstLen: m[1], tos: m[3], table: m[4], protocol: m[5], scope: m[6], typ: m[7], flags: native.Uint32(m[8:]),
		attrs: m[unix.SizeofRtMsg:]}
	return eachAttr(r.attrs, func(typ uint16, v []byte) error {
		var err error
		switch typ {
		case unix.RTA_DST:
			r.dst, r.hasDst = v, true
		case unix.RTA_GATEWAY:
			r.gw = v
		case unix.RTA_PREFSRC:
			r.src = v
		case unix.RTA_OIF:
			r.oif, err = attrU32(v)
		case unix.RTA_PRIORITY:
			r.prio, err = attrU32(v)
		case unix.RTA_TABLE:
			r.rtaTable, err = attrU32(v)
			r.hasTable = true
		case unix.RTA_VIA:
			if _, ok := viaAddr(v); !ok {
				return errRouteVia
			}
			r.via = v
		case unix.RTA_MULTIPATH:
			if err := eachNexthop(v, func(_, _, _ []byte) {}); err != nil {
				return err
			}
			r.multipath = true
		case unix.RTA_METRICS:
			err = eachAttr(v, func(typ uint16, v []byte) error {
				var err error
				switch typ {
				case unix.RTAX_MTU:
					r.mtu, err = attrU32(v)
				case unix.RTAX_ADVMSS:
					r.advMSS, err = attrU32(v)
				case unix.RTAX_FEATURES:
					r.features, err = attrU32(v)
				case unix.RTAX_INITCWND:
					r.initCwnd, err = attrU32(v)
				case unix.RTAX_INITRWND:
					r.initRwnd, err = attrU32(v)
				}
				return err
			})
		}
		return err
	})
}

// eachAttr calls f with the type and value of each attribute in b, read as
// nl.ParseRouteAttr reads them but for a last attribute not padded to 4
// bytes, which it reads as the kernel does (see RouteAttrs), up to an error
// of f. An attribute short of its header or past b's end is an error.
func eachAttr(b []byte, f func(typ uint16, v []byte) error) error {
	native := nl.NativeEndian()
	for len(b) >= unix.SizeofRtAttr {
		l := int(native.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return errRouteAttr
		}
		if err := f(native.Uint16(b[2:]), b[unix.SizeofRtAttr:l]); err != nil {
			return err
		}
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return nil
}

func attrU32(v []byte) (uint32, error) {
	if len(v) < 4 {
		return 0, errRouteU32
	}
	return nl.NativeEndian().Uint32(v), nil
}

// viaAddr reads an RTA_VIA as netlink's Via.Decode does: an IPv4 or IPv6
// family, then the address (for IPv4, the next 4 bytes; for IPv6, the
// rest).
func viaAddr(v []byte) (netlink.Via, bool) {
	if len(v) < 6 {
		return netlink.Via{}, false
	}
	switch family := int(nl.NativeEndian().Uint16(v)); {
	case family == netlink.FAMILY_V4:
		return netlink.Via{AddrFamily: family, Addr: net.IP(v[2:6])}, true
	case family == netlink.FAMILY_V6 && len(v) >= 18:
		return netlink.Via{AddrFamily: family, Addr: net.IP(v[2:])}, true
	}
	return netlink.Via{}, false
}

// eachNexthop calls f with each next hop of v, an RTA_MULTIPATH's value,
// as netlink's deserializeRoute reads them, pointing into v: its struct
// rtnexthop (device, hops, flags), and its RTA_GATEWAY and RTA_VIA, the
// last of each, nil when none. It builds no netlink.NexthopInfo: one handed
// to f, a func value, was moved to the heap, 96 bytes a next hop of every
// multipath route a pass read (TestPassIgnoresForeignMultipath).
func eachNexthop(v []byte, f func(rtnh, gw, via []byte)) error {
	native := nl.NativeEndian()
	for len(v) > 0 {
		if len(v) < unix.SizeofRtNexthop {
			return errNexthop
		}
		l := int(native.Uint16(v))
		if l < unix.SizeofRtNexthop || l > len(v) {
			return errNexthop
		}
		var gw, via []byte
		err := eachAttr(v[unix.SizeofRtNexthop:l], func(typ uint16, a []byte) error {
			switch typ {
			case unix.RTA_GATEWAY:
				gw = a
			case unix.RTA_VIA:
				if _, ok := viaAddr(a); !ok {
					return errNexthop
				}
				via = a
			}
			return nil
		})
		if err != nil {
			return err
		}
		f(v[:unix.SizeofRtNexthop], gw, via)
		v = v[l:]
	}
	return nil
}

// keep is passRoute(r's route): whether a pass keeps r. It allocates
// nothing: the route it judges holds r's destination only, on the stack.
func (r *rtRoute) keep(ifaceIndex int, network netip.Prefix) bool {
	var mask [net.IPv6len]byte
	nr := netlink.Route{Protocol: netlink.RouteProtocol(r.protocol), LinkIndex: int(r.oif), Scope: netlink.Scope(r.scope)}
	dst, ok := r.dstNet(mask[:0])
	if ok {
		nr.Dst = &dst
	}
	return passRoute(&nr, ifaceIndex, network)
}

// dstNet is the destination netlink's deserializeRoute gives r, its mask
// appended to mask, and whether r has one: RTA_DST and the header's
// length; with none, the zero address of an IPv4 or IPv6 route.
func (r *rtRoute) dstNet(mask []byte) (net.IPNet, bool) {
	ip, bits := r.dst, 8*len(r.dst)
	if !r.hasDst {
		switch r.family {
		case unix.AF_INET:
			ip, bits = net.IPv4zero, 8*net.IPv4len
		case unix.AF_INET6:
			ip, bits = net.IPv6zero, 8*net.IPv6len
		default:
			return net.IPNet{}, false
		}
	}
	n := net.IPNet{IP: ip}
	// net.CIDRMask's: nil but for a length of 32 or 128 bits and no more
	// ones than bits.
	if ones := int(r.dstLen); (bits == 8*net.IPv4len || bits == 8*net.IPv6len) && ones <= bits {
		for i := 0; i < bits/8; i++ {
			b := byte(0xff)
			if left := ones - 8*i; left < 8 {
				b = ^byte(0xff >> max(left, 0))
			}
			mask = append(mask, b)
		}
		n.Mask = mask
	}
	return n, true
}

// route is r as netlink's deserializeRoute reads it, in the fields
// routeFromMessage sets, its slices copied out of the message: the
// addresses and the mask into one allocation, the destination another.
func (r *rtRoute) route() netlink.Route {
	buf := make([]byte, 0, len(r.dst)+len(r.gw)+len(r.src)+net.IPv6len)
	clone := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		buf = append(buf, b...)
		return buf[len(buf)-len(b) : len(buf) : len(buf)]
	}
	nr := netlink.Route{
		Family:    int(r.family),
		Scope:     netlink.Scope(r.scope),
		Protocol:  netlink.RouteProtocol(r.protocol),
		Table:     int(r.table),
		Type:      int(r.typ),
		Tos:       int(r.tos),
		Flags:     int(r.flags),
		LinkIndex: int(r.oif),
		Priority:  int(r.prio),
		Gw:        clone(r.gw),
		Src:       clone(r.src),
		MTU:       int(r.mtu),
		AdvMSS:    int(r.advMSS),
		Features:  int(r.features),
		InitCwnd:  int(r.initCwnd),
		InitRwnd:  int(r.initRwnd),
	}
	if r.hasTable {
		nr.Table = int(r.rtaTable)
	}
	ip := clone(r.dst)
	// The mask after the addresses, in the room kept for it.
	if dst, ok := r.dstNet(buf[len(buf):]); ok {
		if r.hasDst {
			dst.IP = ip
		}
		nr.Dst = &dst
	}
	if r.via != nil {
		via, _ := viaAddr(r.via)
		via.Addr = bytes.Clone(via.Addr)
		nr.Via = &via
	}
	if r.multipath {
		// parseRoute read these attributes without an error.
		_ = eachAttr(r.attrs, func(typ uint16, v []byte) error {
			if typ != unix.RTA_MULTIPATH {
				return nil
			}
			return eachNexthop(v, func(rtnh, gw, via []byte) {
				info := &netlink.NexthopInfo{LinkIndex: int(int32(nl.NativeEndian().Uint32(rtnh[4:]))), Hops: int(rtnh[3]), Flags: int(rtnh[2]),
					Gw: bytes.Clone(gw)}
				if via != nil {
					v, _ := viaAddr(via)
					v.Addr = bytes.Clone(v.Addr)
					info.Via = &v
				}
				nr.MultiPath = append(nr.MultiPath, info)
			})
		})
	}
	return nr
}
