package subnet

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestOccupiedMatchesOverlaps checks the allocator's overlap set against
// netip.Prefix.Overlaps on random held subnets of every length, both
// families mixed in.
func TestOccupiedMatchesOverlaps(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// Addresses from a small range, so that overlaps are common.
	addr := func(f *family) netip.Addr {
		if f == &ipv4 {
			return netip.AddrFrom4([4]byte{10, 244, byte(r.IntN(4)), byte(r.IntN(256))})
		}
		var b [16]byte
		b[0], b[7], b[8] = 0xfc, byte(r.IntN(4)), byte(r.IntN(256))
		return netip.AddrFrom16(b)
	}
	prefix := func(f *family, bits int) netip.Prefix { return netip.PrefixFrom(addr(f), bits).Masked() }
	for _, tc := range []struct {
		f    *family
		bits int
	}{{&ipv4, 24}, {&ipv4, 26}, {&ipv6, 64}, {&ipv6, 57}} {
		for round := 0; round < 50; round++ {
			o := newOccupied(tc.f, tc.bits, 0)
			var held []netip.Prefix
			for range r.IntN(6) {
				for _, f := range []*family{&ipv4, &ipv6} {
					p := prefix(f, r.IntN(f.bits+1))
					o.add(p)
					if f == tc.f {
						held = append(held, p)
					}
				}
			}
			for range 200 {
				c := prefix(tc.f, tc.bits)
				want := false
				for _, h := range held {
					want = want || h.Overlaps(c)
				}
				if got := o.overlaps(c); got != want {
					t.Fatalf("/%d: overlaps(%s) = %v, want %v; held %v", tc.bits, c, got, want, held)
				}
			}
		}
	}
}
