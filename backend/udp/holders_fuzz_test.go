package udp

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// procForm writes ap as /proc/net/udp and udp6 show a local address: the
// address as 32-bit words in the machine's byte order, in hex, then the
// port in hex.
func procForm(ap netip.AddrPort) string {
	b := ap.Addr().AsSlice()
	var s strings.Builder
	for i := 0; i < len(b); i += 4 {
		fmt.Fprintf(&s, "%08X", binary.NativeEndian.Uint32(b[i:]))
	}
	return fmt.Sprintf("%s:%04X", s.String(), ap.Port())
}

// TestProcAddr reads local addresses as /proc/net/udp and udp6 write them
// (the lines below are the kernel's on little- and big-endian machines
// alike, made by procForm), and refuses what they never hold.
func TestProcAddr(t *testing.T) {
	for _, s := range []string{"198.18.0.1:8285", "0.0.0.0:8285", "127.0.0.1:1", "[::]:8285", "[::ffff:198.18.0.1]:8285", "[fd00::1]:65535"} {
		want := netip.MustParseAddrPort(s)
		if got, ok := procAddr(procForm(want)); !ok || got != want {
			t.Errorf("procAddr(%q) = %v, %v; want %v", procForm(want), got, ok, want)
		}
	}
	for _, s := range []string{"", ":", "0100007F", "0100007F:", ":205D", "0100007F:10000", "0100007F:-1", "0100007:205D",
		"0100007F00:205D", "0100007G:205D", "00000000000000000000000000000000000000:205D", "0100007F:0x20"} {
		if got, ok := procAddr(s); ok {
			t.Errorf("procAddr(%q) = %v, want refused", s, got)
		}
	}
}

// FuzzProcAddr: a local address from /proc/net/udp or udp6 is either
// refused or read as an IPv4 address (8 hex digits) or an IPv6 one (32),
// which procForm writes back to what reads as the same.
func FuzzProcAddr(f *testing.F) {
	for _, s := range []string{"0100007F:205D", "00000000:205D", "00000000000000000000000000000000:205D",
		"0000000000000000FFFF0000011200C6:205D", "0100007f:205d", "", ":", "0100007F", "0100007F:10000", "0100007F:+1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ap, ok := procAddr(s)
		if !ok {
			return
		}
		h, _, _ := strings.Cut(s, ":")
		if a := ap.Addr(); !a.IsValid() || a.Is4() != (len(h) == 8) || (a.Is6() && len(h) != 32) || a.Zone() != "" {
			t.Fatalf("procAddr(%q) = %v from %d hex digits", s, ap, len(h))
		}
		if back, ok := procAddr(procForm(ap)); !ok || back != ap {
			t.Fatalf("procAddr(%q) = %v, written back as %q, read as %v, %v", s, ap, procForm(ap), back, ok)
		}
	})
}

// procUDPSock is a UDP socket as /proc/net/udp or udp6 shows it.
type procUDPSock struct {
	local netip.AddrPort
	inode uint32
}

// udpTables writes /proc/net/udp and udp6 as the kernel does
// (udp4_seq_show, padded to 127 columns, and ip6_dgram_sock_seq_show) for
// socks: the IPv4 ones in the first, the others in the second.
func udpTables(socks []procUDPSock) (udp4, udp6 []byte) {
	var b4, b6 strings.Builder
	fmt.Fprintf(&b4, "%-127s\n", "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops")
	b6.WriteString("  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n")
	for i, s := range socks {
		if s.local.Addr().Is4() {
			l := fmt.Sprintf("%5d: %s %08X:%04X %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x %d",
				i, procForm(s.local), 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, s.inode, 2, 0, 0)
			fmt.Fprintf(&b4, "%-127s\n", l)
		} else {
			fmt.Fprintf(&b6, "%5d: %s %s %02X %08X:%08X %02X:%08X %08X %5d %8d %d %d %016x %d\n",
				i, procForm(s.local), procForm(netip.AddrPortFrom(netip.IPv6Unspecified(), 0)), 7, 0, 0, 0, 0, 0, 1000, 0, s.inode, 2, 0, 0)
		}
	}
	return []byte(b4.String()), []byte(b6.String())
}

// kernelUDP and kernelUDP6 are /proc/net/udp and udp6 as Linux 6.18 wrote
// them (x86-64) in a namespace with UDP sockets on 127.0.0.1:8285 (inode
// 6649516), 0.0.0.0:8472 (6649517) and [::]:8285 (6649518);
// kernelUDP6Mapped is udp6 in a namespace with one socket, bound to
// [::ffff:0.0.0.0]:8285 (7772497), where binding 198.18.0.7:8285 then
// failed with EADDRINUSE.
const (
	kernelUDP = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n" +
		"10963: 0100007F:205D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6649516 2 00000000873b022c 0       \n" +
		"11150: 00000000:2118 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6649517 2 000000007fef6d6b 0       \n"
	kernelUDP6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		"10963: 00000000000000000000000000000000:205D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6649518 2 00000000d785b0d0 0\n"
	kernelUDP6Mapped = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
		" 5810: 0000000000000000FFFF000000000000:205D 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7772497 2 00000000cbdfdf4d 0\n"
)

// TestPortSocketsInKernelTables: portSocketsIn reads the kernel's tables as
// the sockets in the way of each address.
func TestPortSocketsInKernelTables(t *testing.T) {
	for _, tc := range []struct {
		addr              string
		udp, udp6, mapped []string
	}{
		{"127.0.0.1:8285", []string{"socket:[6649516]"}, []string{"socket:[6649518]"}, []string{"socket:[7772497]"}},
		{"198.18.0.1:8285", nil, []string{"socket:[6649518]"}, []string{"socket:[7772497]"}},
		{"198.18.0.1:8472", []string{"socket:[6649517]"}, nil, nil},
		{"127.0.0.1:53", nil, nil, nil},
		// Binding 0.0.0.0 fails while any IPv4 address holds the port,
		// mapped into IPv6 or not (EADDRINUSE after 198.18.0.1:8285 and
		// after ::ffff:198.18.0.1:8286, seen in a namespace, Linux 6.18).
		{"0.0.0.0:8285", []string{"socket:[6649516]"}, []string{"socket:[6649518]"}, []string{"socket:[7772497]"}},
	} {
		for _, table := range []struct {
			content string
			want    []string
		}{{kernelUDP, tc.udp}, {kernelUDP6, tc.udp6}, {kernelUDP6Mapped, tc.mapped}} {
			want := map[string]bool{}
			for _, s := range table.want {
				want[s] = true
			}
			if got := portSocketsIn([]byte(table.content), netip.MustParseAddrPort(tc.addr)); !maps.Equal(got, want) {
				t.Errorf("portSocketsIn(%q, %s) = %v, want %v", table.content, tc.addr, got, want)
			}
		}
	}
}

// FuzzPortSocketsIn: portSocketsIn, which finds the UDP sockets in the way
// of the backend's (portSockets, for a start's message naming who holds
// the port), reads from the tables the kernel writes exactly the sockets on
// the port on its address, on the address mapped into IPv6, or on every
// address (0.0.0.0 or ::), and, for 0.0.0.0, those on any IPv4 address,
// mapped or not, each by its inode. Whatever a table holds, each socket it
// names is the tenth field of a line whose second is an address on the
// port.
func FuzzPortSocketsIn(f *testing.F) {
	var list []byte
	for _, s := range []struct {
		kind  byte
		addr  string
		port  uint16
		inode uint32
	}{{0, "198.18.0.1", 8285, 12345}, {2, "0.0.0.0", 8285, 12346}, {3, "::", 8285, 12347}, {4, "::", 8285, 12348},
		{0, "198.18.0.2", 8285, 12349}, {0, "198.18.0.1", 8472, 12350}, {3, "fd00::1", 8285, 12351}, {1, "0.0.0.0", 0, 7}, {3, "::ffff:0.0.0.0", 8285, 12352}} {
		a := netip.MustParseAddr(s.addr).As16()
		if netip.MustParseAddr(s.addr).Is4() {
			copy(a[:], netip.MustParseAddr(s.addr).AsSlice())
		}
		list = append(append(list, s.kind), a[:]...)
		list = append(binary.BigEndian.AppendUint16(list, s.port), 1) // the port as given
		list = binary.BigEndian.AppendUint32(list, s.inode)
	}
	f.Add(uint32(0xc6120001), uint16(8285), list, []byte{})
	f.Add(uint32(0x7f000001), uint16(8285), []byte{}, []byte(kernelUDP))
	f.Add(uint32(0xc6120001), uint16(8285), []byte{}, []byte(kernelUDP6))
	f.Add(uint32(0xc6120007), uint16(8285), []byte{}, []byte(kernelUDP6Mapped))
	f.Add(uint32(0x7f000001), uint16(53), []byte{}, []byte("  2: 0100007F:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 29671 2 0000000000000000 0\n"))
	f.Add(uint32(0), uint16(0), []byte{}, []byte("0: 00000000:0000 a b c d e f g 12]x\n0: :0 a b c d e f g 1\n"))
	f.Add(uint32(0), uint16(8285), list[:3*24], []byte{}) // 0.0.0.0: 198.18.0.1 is in its way
	f.Add(uint32(0), uint16(8285), []byte{}, []byte(kernelUDP))
	f.Fuzz(func(t *testing.T, ip uint32, port uint16, list, raw []byte) {
		addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{byte(ip >> 24), byte(ip >> 16), byte(ip >> 8), byte(ip)}), port)
		for key := range portSocketsIn(raw, addr) {
			inode, ok := strings.CutPrefix(key, "socket:[")
			inode, ok2 := strings.CutSuffix(inode, "]")
			found := false
			for _, l := range strings.Split(string(raw), "\n") {
				if f := strings.Fields(l); len(f) >= 10 && f[9] == inode {
					a, ok := procAddr(f[1])
					found = found || ok && a.Port() == port
				}
			}
			if !ok || !ok2 || !found {
				t.Fatalf("portSocketsIn(%q, %v): %q, on no line of an address on the port", raw, addr, key)
			}
		}

		// Sockets of 24 bytes each: a kind, an address, a port and an
		// inode.
		var socks []procUDPSock
		want := map[string]bool{}
		for b := list; len(b) >= 24; b = b[24:] {
			a16 := [16]byte(b[1:17])
			a4 := [4]byte(b[1:5])
			var a netip.Addr
			switch b[0] % 6 {
			case 0:
				a = netip.AddrFrom4(a4)
			case 1:
				a = addr.Addr()
			case 2:
				a = netip.IPv4Unspecified()
			case 3:
				a = netip.AddrFrom16(a16)
			case 4:
				a = netip.AddrFrom16(addr.Addr().As16())
			case 5:
				a = netip.IPv6Unspecified()
			}
			p := binary.BigEndian.Uint16(b[17:])
			if b[19]&1 == 0 {
				p = port
			}
			s := procUDPSock{netip.AddrPortFrom(a, p), binary.BigEndian.Uint32(b[20:])}
			socks = append(socks, s)
			// ::ffff:0.0.0.0 is in the way as 0.0.0.0 is: Linux binds
			// an IPv6 socket there to every IPv4 address
			// (kernelUDP6Mapped). Binding 0.0.0.0 conflicts with every
			// IPv4 address, mapped or not.
			if ip := a.Unmap(); p == port && (ip == addr.Addr() || ip.IsUnspecified() || addr.Addr().IsUnspecified() && ip.Is4()) {
				want[fmt.Sprintf("socket:[%d]", s.inode)] = true
			}
		}
		udp4, udp6 := udpTables(socks)
		got := portSocketsIn(udp4, addr)
		maps.Copy(got, portSocketsIn(udp6, addr))
		if !maps.Equal(got, want) {
			t.Fatalf("portSocketsIn for %v of\n%s%s= %v, want %v", addr, udp4, udp6, got, want)
		}
	})
}

// tunFdinfo writes /proc/<pid>/fdinfo/<fd> as the kernel does for a
// descriptor of /dev/net/tun (seq_show, then tun_chr_show_fdinfo) attached
// to the device called name ("" for one not attached).
func tunFdinfo(name string, ino uint64) []byte {
	return fmt.Appendf(nil, "pos:\t0\nflags:\t02004002\nmnt_id:\t26\nino:\t%d\niff:\t%s\n", ino, name)
}

// validDevName is the kernel's dev_valid_name: what TUNSETIFF lets a
// device be called. Its isspace is ASCII's and 0xa0.
func validDevName(name string) bool {
	if name == "" || len(name) >= unix.IFNAMSIZ || name == "." || name == ".." {
		return false
	}
	for i := range len(name) {
		if c := name[i]; c == '/' || c == ':' || c == ' ' || '\t' <= c && c <= '\r' || c == 0xa0 || c == 0 {
			return false
		}
	}
	return true
}

// FuzzTunQueues: tunQueues, which counts a process's queues of the device
// (queuesOf: who else holds it, for a start's message, and whether a
// leftover device is held by our keepers only), counts a descriptor's
// fdinfo as the kernel writes it as one queue of dev exactly when the
// descriptor is attached to a device called dev, whatever the devices
// are called. Whatever fdinfo holds, it counts no more queues than lines
// that begin with "iff:".
func FuzzTunQueues(f *testing.F) {
	f.Add("flannel0", "flannel0", []byte{})
	f.Add("flannel0", "flannel1", []byte("iff:\tflannel0\niff: flannel0 \r\n"))
	f.Add("flannel0", "", []byte("pos:\t0\nflags:\t02\nmnt_id:\t26\nino:\t1052\n"))
	f.Add("tun.x-1", "tun.x-1 ", []byte("iff:flannel0"))
	f.Fuzz(func(t *testing.T, dev, name string, raw []byte) {
		if n := tunQueues(raw, dev); n < 0 || n > strings.Count("\n"+string(raw), "\niff:") {
			t.Fatalf("tunQueues(%q, %q) = %d", raw, dev, n)
		}
		if !validDevName(dev) || name != "" && !validDevName(name) {
			return
		}
		want := 0
		if name == dev {
			want = 1
		}
		if n := tunQueues(tunFdinfo(name, 1052), dev); n != want {
			t.Fatalf("tunQueues of a descriptor of %q, for %q: %d, want %d", name, dev, n, want)
		}
	})
}

// FuzzKeeperCmdline: isKeeperCmdline, by which keeperPids knows the
// keepers of dev, takes the /proc/<pid>/cmdline the kernel writes for a
// process (its arguments, each ended by a NUL) for a keeper's of dev
// exactly when its arguments are a keeper's of dev, spawnKeeperOf's.
func FuzzKeeperCmdline(f *testing.F) {
	f.Add("flannel0", "agentd-udp-keeper\x00flannel0")
	f.Add("flannel0", "agentd-udp-keeper\x00flannel0\x00")
	f.Add("flannel0", "agentd-udp-keeper\x00flannel")
	f.Add("flannel0", "/usr/bin/agentd\x00--backend=udp")
	f.Add("flannel0", "agentd-udp-keeper\x00flannel0\x00x")
	f.Fuzz(func(t *testing.T, dev, argList string) {
		if !validDevName(dev) {
			return
		}
		args := strings.Split(argList, "\x00")
		var cmdline []byte
		for _, a := range args {
			cmdline = append(append(cmdline, a...), 0)
		}
		want := len(args) == 2 && args[0] == keeperName && args[1] == dev
		if got := isKeeperCmdline(cmdline, dev); got != want {
			t.Fatalf("isKeeperCmdline(%q, %q) = %v, want %v", cmdline, dev, got, want)
		}
	})
}
