package backend_test

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
)

// TestPrefixSet: membership across prefix lengths, and what is not a
// usable IPv4 prefix left out.
func TestPrefixSet(t *testing.T) {
	var s backend.PrefixSet
	for _, p := range []string{"10.244.0.0/24", "10.245.0.0/16", "10.246.1.64/26", "10.247.0.9/24"} {
		s.Add(netip.MustParsePrefix(p))
	}
	s.Add(netip.Prefix{})
	s.Add(netip.MustParsePrefix("fd00::/64"))
	for a, want := range map[string]bool{
		"10.244.0.0": true, "10.244.0.255": true, "10.244.1.0": false,
		"10.245.200.1": true, "10.246.1.64": true, "10.246.1.127": true, "10.246.1.128": false, "10.246.1.63": false,
		"10.247.0.1": true, // added unmasked
		"0.0.0.0":    false, "fd00::1": false,
	} {
		if got := s.Contains(netip.MustParseAddr(a)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", a, got, want)
		}
	}
	// The lengths at the ends of the mask arithmetic.
	host, all := backend.MakePrefixSet(1), backend.MakePrefixSet(1)
	host.Add(netip.MustParsePrefix("198.18.0.7/32"))
	all.Add(netip.MustParsePrefix("0.0.0.0/0"))
	for _, tc := range []struct {
		set  *backend.PrefixSet
		a    string
		want bool
	}{
		{&host, "198.18.0.7", true}, {&host, "198.18.0.6", false}, {&host, "198.18.0.8", false},
		{&all, "255.255.255.255", true}, {&all, "0.0.0.0", true}, {&all, "::", false},
	} {
		if got := tc.set.Contains(netip.MustParseAddr(tc.a)); got != tc.want {
			t.Errorf("Contains(%s) = %v, want %v", tc.a, got, tc.want)
		}
	}
}
