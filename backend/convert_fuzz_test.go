package backend_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
)

// FuzzPrefixFromIPNet: the conversions of what netlink hands us (an
// address's or a route's IP and mask, a neighbour's or FDB entry's hardware
// address) take any bytes. A prefix is accepted exactly when the IP has 4 or
// 16 bytes and the mask is canonical and of the address's family (an IPv4
// address with a 16-byte mask of 96 ones or more too); it then keeps the
// host bits, holds exactly the addresses the IPNet holds, and converts back
// to itself. An address converts back to itself and equals the IP; a MAC is
// taken from exactly 6 bytes and prints and parses back to itself.
func FuzzPrefixFromIPNet(f *testing.F) {
	add := func(ip net.IP, mask net.IPMask) { f.Add([]byte(ip), []byte(mask)) }
	add(net.IPv4(10, 244, 1, 0).To4(), net.CIDRMask(24, 32))             // an IPv4 route's Dst
	add(net.IPv4(198, 18, 0, 1).To4(), net.CIDRMask(15, 32))             // an address of the external interface
	add(net.IPv4(10, 244, 1, 0), net.CIDRMask(120, 128))                 // IPv4 in 16-byte form
	add(net.ParseIP("fd00:10:244:1::"), net.CIDRMask(64, 128))           // an IPv6 route
	add(net.ParseIP("::ffff:10.244.0.0"), net.CIDRMask(112, 128))        // IPv4-mapped IPv6
	add(net.ParseIP("fe80::1"), net.CIDRMask(24, 32))                    // mask of the other family
	add(net.IPv4(10, 0, 0, 1).To4(), net.IPMask{255, 0, 255, 0})         // not canonical
	add(net.IPv4(0, 0, 0, 0).To4(), net.CIDRMask(0, 32))                 // the default route
	add([]byte{0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}, net.CIDRMask(8, 32)) // a MAC's length
	add(nil, nil)
	f.Fuzz(func(t *testing.T, ip, mask []byte) {
		n := &net.IPNet{IP: ip, Mask: mask}
		p, ok := backend.PrefixFromIPNet(n)
		a, aok := netip.AddrFromSlice(ip)
		a = a.Unmap()
		ones, bits := net.IPMask(mask).Size()
		want := aok && bits != 0 && (bits == a.BitLen() || bits == 128 && a.Is4() && ones >= 96)
		if ok != want {
			t.Fatalf("PrefixFromIPNet(%v) = %s, %v; want ok %v", n, p, ok, want)
		}
		if !ok {
			if p.IsValid() {
				t.Fatalf("PrefixFromIPNet(%v) = %s but not ok", n, p)
			}
		} else {
			if p.Addr() != a || p.Bits() != ones-(bits-a.BitLen()) {
				t.Fatalf("PrefixFromIPNet(%v) = %s: not the IP %s with its mask's %d ones", n, p, a, ones)
			}
			back, ok := backend.PrefixFromIPNet(backend.IPNet(p))
			if !ok || back != p {
				t.Fatalf("PrefixFromIPNet(%v) = %s, which converts back to %s, %v", n, p, back, ok)
			}
			// The addresses at and around both ends of the prefix, and
			// the IP itself, are in it exactly when in the IPNet. An
			// IPv4-mapped address (::ffff:a.b.c.d) is left out of an IPv6
			// prefix's check: net.IPNet takes it for its IPv4 address, in no
			// IPv6 IPNet, where netip (and the kernel's IPv6 routes) take it
			// for the IPv6 address it is.
			first, last := p.Masked().Addr(), lastAddr(p)
			for _, x := range []netip.Addr{a, first, first.Prev(), last, last.Next()} {
				if x.Is4In6() && p.Addr().Is6() {
					continue
				}
				if x.IsValid() && n.Contains(backend.IP(x)) != p.Contains(x) {
					t.Fatalf("%s: the IPNet %v holds %s: %v, the prefix %s: %v", x, n, x, n.Contains(backend.IP(x)), p, p.Contains(x))
				}
			}
		}

		got, ok := backend.AddrFromIP(ip)
		if ok != aok || ok && (got != a || !backend.IP(got).Equal(net.IP(ip))) {
			t.Fatalf("AddrFromIP(%v) = %s, %v; want %s, %v", net.IP(ip), got, ok, a, aok)
		}
		if ok {
			if back, ok := backend.AddrFromIP(backend.IP(got)); !ok || back != got {
				t.Fatalf("AddrFromIP(IP(%s)) = %s, %v", got, back, ok)
			}
		}

		m, ok := backend.MACFromHardwareAddr(ip)
		if ok != (len(ip) == 6) || ok && !bytes.Equal(m.HardwareAddr(), ip) {
			t.Fatalf("MACFromHardwareAddr(%x) = %s, %v", ip, m, ok)
		}
		if ok {
			if back, err := backend.ParseMAC(m.String()); err != nil || back != m {
				t.Fatalf("MAC %s parses back as %s, %v", m, back, err)
			}
		}
	})
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}
