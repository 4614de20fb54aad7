package backend

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nlMessage wraps data in a netlink header of typ as the kernel sends an
// event (port 0, sequence 0), padded to 4 bytes.
func nlMessage(typ uint16, data []byte) []byte {
	m := binary.NativeEndian.AppendUint32(nil, uint32(unix.SizeofNlMsghdr+len(data)))
	m = binary.NativeEndian.AppendUint16(m, typ)
	m = append(m, make([]byte, 10)...) // flags, sequence, port
	m = append(m, data...)
	return append(m, make([]byte, -len(m)&3)...)
}

// neighMessage is a neighbour as neigh_fill_info writes it: NDA_DST,
// NDA_LLADDR, NDA_PROBES and NDA_CACHEINFO.
func neighMessage(index uint32, dst net.IP, mac net.HardwareAddr) []byte {
	hdr := netlink.Ndmsg{Family: unix.AF_INET, Index: index, State: netlink.NUD_REACHABLE}
	return ndMessage(hdr, []uint16{unix.NDA_DST, unix.NDA_LLADDR, unix.NDA_PROBES, unix.NDA_CACHEINFO},
		[][]byte{dst, mac, {0, 0, 0, 0}, make([]byte, 16)})
}

// FuzzNeighEvents: neighEvents, the neighbour subscription's reader of what
// one receive holds, reads a datagram of neighbour and FDB events as the
// kernel writes them (neigh_fill_info, vxlan_fdb_info), with NLMSG_DONE and
// acknowledgements among them, as those events in order: each one's type,
// link, address, MAC and VNI, and VNI 0 told from no NDA_VNI; an error
// message ends it, with the error, after the events before it.
func FuzzNeighEvents(f *testing.F) {
	f.Add([]byte{0, 1, 1}, []byte{9, 10, 244, 5, 0, 0x3e, 0x1b, 0x7c, 0, 0, 1})
	f.Add([]byte{1, 1, 1, 2, 3, 0}, []byte{9, 0, 198, 18, 0, 2, 0x3e, 0x1b, 0x7c, 0, 0, 1, 9, 1, 198, 18, 0, 3, 2, 0, 0, 0, 0, 0, 9, 2})
	f.Add([]byte{0, 4, 0}, []byte{1, 10, 244, 1, 0, 0, 0, 0, 0, 0, 1, 11})
	f.Add([]byte{3, 5, 0}, []byte{})
	f.Fuzz(func(t *testing.T, items, data []byte) {
		take := func(n int) []byte {
			b := make([]byte, n)
			data = data[copy(b, data):]
			return b
		}
		items = items[:min(len(items), 16)] // more only make each run slower
		var dgram []byte
		var want []NeighEvent
		var wantErr error
		for _, it := range items {
			switch it % 6 {
			case 0, 1:
				typ := uint16(unix.RTM_NEWNEIGH)
				if it&0x80 != 0 {
					typ = unix.RTM_DELNEIGH
				}
				index := uint32(take(1)[0]) + 1
				dst, mac := net.IP(take(4)), net.HardwareAddr(take(6))
				n := netlink.Neigh{LinkIndex: int(index), IP: dst, HardwareAddr: mac}
				var vniZero bool
				var m []byte
				if it%6 == 0 {
					n.Family = unix.AF_INET
					m = neighMessage(index, dst, mac)
				} else {
					n.Family = unix.AF_BRIDGE
					var vni []byte
					switch k := take(1)[0]; k % 3 {
					case 1:
						vni = []byte{0, 0, 0, 0}
						vniZero = true
					case 2:
						vni = binary.NativeEndian.AppendUint32(nil, uint32(k)<<4|1)
						n.VNI = int(uint32(k)<<4 | 1)
					}
					m = fdbEntry(index, mac, dst, 0, vni)
				}
				dgram = append(dgram, nlMessage(typ, m)...)
				if wantErr == nil {
					want = append(want, NeighEvent{NeighUpdate: netlink.NeighUpdate{Type: typ, Neigh: n}, VNIZero: vniZero})
				}
			case 2:
				dgram = append(dgram, nlMessage(unix.NLMSG_DONE, []byte{0, 0, 0, 0})...)
			case 3:
				// An acknowledgement: error 0, then the request's header.
				dgram = append(dgram, nlMessage(unix.NLMSG_ERROR, make([]byte, 4+unix.SizeofNlMsghdr))...)
			case 4:
				errno := unix.Errno(take(1)[0]%133 + 1)
				dgram = append(dgram, nlMessage(unix.NLMSG_ERROR, append(binary.NativeEndian.AppendUint32(nil, uint32(-int32(errno))), make([]byte, unix.SizeofNlMsghdr)...))...)
				if wantErr == nil {
					wantErr = errno
				}
			case 5:
				dgram = append(dgram, nlMessage(unix.NLMSG_ERROR, []byte{0, 0})...)
				if wantErr == nil {
					wantErr = errors.New("short netlink error message")
				}
			}
		}
		msgs, err := syscall.ParseNetlinkMessage(dgram)
		if err != nil {
			t.Fatalf("ParseNetlinkMessage(%x): %v", dgram, err)
		}
		got, err := neighEvents(msgs)
		if (err == nil) != (wantErr == nil) || err != nil && err.Error() != wantErr.Error() {
			t.Fatalf("neighEvents(%x): error %v, want %v", dgram, err, wantErr)
		}
		if len(got) != len(want) {
			t.Fatalf("neighEvents(%x): %d events, want %d", dgram, len(got), len(want))
		}
		for i, g := range got {
			w := want[i]
			if g.Type != w.Type || g.VNIZero != w.VNIZero || g.LinkIndex != w.LinkIndex || g.Family != w.Family ||
				!g.IP.Equal(w.IP) || !bytes.Equal(g.HardwareAddr, w.HardwareAddr) || g.VNI != w.VNI {
				t.Fatalf("neighEvents(%x): event %d is %+v, want %+v", dgram, i, g, w)
			}
		}
	})
}
