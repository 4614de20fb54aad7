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

// TestPick4AmongFirstFree: a new lease's subnet is one of the first
// pickAmong free subnets of the pool, chosen at random among them (so that
// hosts starting together rarely race for the same key), never a taken one;
// the previous subnet, when free, is kept.
func TestPick4AmongFirstFree(t *testing.T) {
	t.Parallel()
	net, err := ParseConfig([]byte(`{"Network":"10.0.0.0/8","SubnetLen":24}`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewManager(NewRegistry(nil, ""), net, ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1")})
	m.rand = rand.New(rand.NewPCG(1, 2))
	// Every third subnet of the first 600 is taken: the first pickAmong
	// free ones end at index 149.
	taken := newOccupied(&ipv4, 24, 200)
	firstFree := map[int]bool{}
	for i := 0; i < 600; i++ {
		sn, _ := net.NthSubnet(i)
		switch {
		case i%3 == 0:
			taken.add(sn)
		case len(firstFree) < pickAmong:
			firstFree[i] = true
		}
	}
	seen := map[int]int{}
	for range 5000 {
		sn, i := m.pick4(taken, 0)
		if got, _ := net.NthSubnet(i); got != sn || !firstFree[i] {
			t.Fatalf("picked %s (index %d), not one of the first %d free subnets", sn, i, pickAmong)
		}
		seen[i]++
	}
	// 5000 draws among 100: each is drawn about 50 times; a pick that
	// favoured a few (or the first) would leave many undrawn.
	if len(seen) != pickAmong {
		t.Errorf("5000 picks drew %d of the %d first free subnets", len(seen), pickAmong)
	}
	for i, n := range seen {
		if n < 15 || n > 100 {
			t.Errorf("index %d drawn %d times of 5000, want about 50", i, n)
		}
	}

	prev, _ := net.NthSubnet(4000)
	m.cfg.PreviousSubnet = netip.PrefixFrom(prev.Addr().Next(), 24) // subnet.env's .1/24
	if sn, i := m.pick4(taken, 0); sn != prev || i != 4000 {
		t.Errorf("previous subnet %s free: picked %s (index %d)", prev, sn, i)
	}
	taken.add(prev)
	if sn, i := m.pick4(taken, 0); sn == prev || !firstFree[i] {
		t.Errorf("previous subnet %s taken: picked %s (index %d)", prev, sn, i)
	}
}
