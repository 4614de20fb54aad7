package udp

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
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
