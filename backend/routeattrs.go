package backend

import (
	"encoding/binary"
	"syscall"

	"golang.org/x/sys/unix"
)

// RouteAttrs reads the netlink attributes in b as nl.ParseRouteAttr does,
// which panics where b ends with an attribute whose length is not a
// multiple of 4: it slices past the end to skip the padding that such a
// last attribute lacks (FuzzParseConntrack, FuzzParseReceiveFlags). The
// kernel pads what it writes, but reads such an attribute (nla_ok), and so
// does this; like the kernel, it leaves a tail of fewer than 4 bytes
// unread. An attribute whose length is short of its header or runs past b
// is unix.EINVAL, as in netlink. Each value is a slice of b.
func RouteAttrs(b []byte) ([]syscall.NetlinkRouteAttr, error) {
	var attrs []syscall.NetlinkRouteAttr
	for len(b) >= unix.SizeofRtAttr {
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofRtAttr || l > len(b) {
			return nil, unix.EINVAL
		}
		attrs = append(attrs, syscall.NetlinkRouteAttr{
			Attr:  syscall.RtAttr{Len: uint16(l), Type: binary.NativeEndian.Uint16(b[2:])},
			Value: b[unix.SizeofRtAttr:l],
		})
		b = b[min(len(b), (l+unix.RTA_ALIGNTO-1)&^(unix.RTA_ALIGNTO-1)):]
	}
	return attrs, nil
}
