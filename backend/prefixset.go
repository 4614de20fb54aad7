package backend

import (
	"net/netip"

	"github.com/agentd/agentd/subnet"
)

// PrefixSet holds IPv4 prefixes for membership tests that cost one map
// lookup per prefix length present, not one test per prefix: the subnets of
// thousands of peers are mostly of one length. The zero value is an empty
// set.
type PrefixSet struct {
	// byBits holds the prefixes' network addresses (be32) by length.
	byBits map[int]map[uint32]struct{}
	// size is the room a length's map is made with.
	size int
}

// MakePrefixSet returns an empty set with room for n prefixes of a length.
func MakePrefixSet(n int) PrefixSet { return PrefixSet{size: n} }

// Add adds p, masked; an invalid or IPv6 prefix is left out.
func (s *PrefixSet) Add(p netip.Prefix) {
	if !p.IsValid() || !p.Addr().Is4() {
		return
	}
	if s.byBits == nil {
		s.byBits = map[int]map[uint32]struct{}{}
	}
	m := s.byBits[p.Bits()]
	if m == nil {
		m = make(map[uint32]struct{}, s.size)
		s.byBits[p.Bits()] = m
	}
	m[be32(p.Masked().Addr())] = struct{}{}
}

// Contains says whether a lies in one of the prefixes.
func (s *PrefixSet) Contains(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	v := be32(a)
	for bits, m := range s.byBits {
		if _, ok := m[v&^(^uint32(0)>>bits)]; ok {
			return true
		}
	}
	return false
}

// be32 is the IPv4 address a as a big-endian number.
func be32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// OverlaySet returns the overlay's subnets that own and peers hold, whatever
// their backend: a tunnel's public IP in one of them would be reached
// through the overlay, not the underlay.
func OverlaySet(own subnet.Lease, peers []subnet.Lease) PrefixSet {
	s := MakePrefixSet(len(peers) + 1)
	s.Add(own.Subnet)
	for _, p := range peers {
		s.Add(p.Subnet)
	}
	return s
}
