package backend

import (
	"bytes"
	"encoding/binary"
	"testing"
	"unsafe"

	"github.com/vishvananda/netlink/nl"
)

// FuzzRouteAttrs: RouteAttrs, the attribute reader of parseConntrack and of
// the vxlan backend's parseReceiveFlags, reads attributes as netlink's
// nl.ParseRouteAttr does wherever that reads b at all (b of a multiple of
// 4 bytes); attributes written as the kernel writes them, also with the
// last one's padding cut off, read back as written; and whatever b holds,
// what it reads is a chain of attributes from b's start, each at the
// 4-byte boundary after the one before, up to a tail of fewer than 4
// bytes, each value a slice of b.
func FuzzRouteAttrs(f *testing.F) {
	f.Add([]byte{8, 0, 1, 0, 1, 0, 0, 0, 5, 0, 2, 0, 1}, []byte{})
	f.Add([]byte{5, 0, 1, 0, 1}, []byte{1, 1, 9, 2, 0, 3, 2, 1, 2})
	f.Add([]byte{4, 0, 0, 0, 2, 0}, []byte{18, 0})
	f.Add([]byte{3, 0, 0, 0}, []byte{})
	f.Fuzz(func(t *testing.T, b, stream []byte) {
		attrs, err := RouteAttrs(b)
		if len(b)%4 == 0 {
			want, wantErr := nl.ParseRouteAttr(b)
			if (err == nil) != (wantErr == nil) || len(attrs) != len(want) {
				t.Fatalf("RouteAttrs(%x) = %v, %v; netlink reads %v, %v", b, attrs, err, want, wantErr)
			}
			for i := range attrs {
				if attrs[i].Attr != want[i].Attr || !bytes.Equal(attrs[i].Value, want[i].Value) {
					t.Fatalf("RouteAttrs(%x): attribute %d is %v, netlink reads %v", b, i, attrs[i], want[i])
				}
			}
		}
		if err != nil {
			if attrs != nil {
				t.Fatalf("RouteAttrs(%x) = %v with %v", b, attrs, err)
			}
		} else {
			off := 0
			for _, a := range attrs {
				l := int(a.Attr.Len)
				if off+l > len(b) || l < 4 || binary.NativeEndian.Uint16(b[off:]) != a.Attr.Len || binary.NativeEndian.Uint16(b[off+2:]) != a.Attr.Type ||
					len(a.Value) != l-4 || l > 4 && unsafe.SliceData(a.Value) != &b[off+4] {
					t.Fatalf("RouteAttrs(%x): %v, not the attribute at %d", b, a, off)
				}
				off = min(len(b), off+(l+3)&^3)
			}
			if len(b)-off >= 4 {
				t.Fatalf("RouteAttrs(%x) leaves %d bytes unread", b, len(b)-off)
			}
		}

		types, values := attrStream(stream)
		var m []byte
		for i, typ := range types {
			m = append(m, nl.NewRtAttr(int(typ), values[i]).Serialize()...)
		}
		if len(types) > 0 {
			m = m[:len(m)-(-(4+len(values[len(values)-1]))&3)]
		}
		attrs, err = RouteAttrs(m)
		if err != nil || len(attrs) != len(types) {
			t.Fatalf("RouteAttrs(%x) = %v, %v; want %d attributes", m, attrs, err, len(types))
		}
		for i, a := range attrs {
			if a.Attr.Type != types[i] || !bytes.Equal(a.Value, values[i]) {
				t.Fatalf("RouteAttrs(%x): attribute %d is %v, want type %d, %x", m, i, a, types[i], values[i])
			}
		}
	})
}
