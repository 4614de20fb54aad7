package subnet

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"unicode/utf8"
)

// FuzzFlanneldSubnetKey checks FlanneldSubnetKey (and flanneldSubnetKey's
// host bits) against flanneldReads, an oracle written from flanneld's rule
// without a regexp, and that every key agentd writes is read alike by both
// (but a /32 or /128, which flanneld refuses).
func FuzzFlanneldSubnetKey(f *testing.F) {
	const maxOracleKey = 64 // longer than any dual-stack key agentd writes
	for _, s := range []string{
		"10.244.5.0-24",
		"10.244.5.0-024",
		"x10.244.5.0-24",
		"old/10.244.5.0-24",
		"10.244.5.7-24",
		"10.244.05.0-24",
		"10.244.5.0-24x",
		"10.244.5.0-32",
		"10.244.5.0-31",
		"1.2.3.4.5-24",
		"1.234.5.6-24",
		"10x244x5x0-24",
		"10.244.5.0-24&fc00:0:0:5::-64",
		"10.244.5.0-24&fc00:0000:0:0005::-064",
		"10.244.5.0-24&FC00::-64",
		"10.244.5.0-24&::ffff:a00:1-120",
		"10.244.5.0-24&fc00::-128",
		"10.244.5.0-24&-64",
		"1.2.3.4-5&6.7.8.9-10",
		"9.9.9.9-9\n1.2.3.4-24",
		"1.2\xff3.4-24",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		sn, sn6, ok := FlanneldSubnetKey(key)
		_, _, hostBits, _ := flanneldSubnetKey(key)
		// The oracle backtracks: a run of n digits costs it n^4 steps.
		if len(key) <= maxOracleKey {
			wsn, wsn6, whostBits, wok := flanneldReads(key)
			if ok != wok || sn != wsn || sn6 != wsn6 || ok && hostBits != whostBits {
				t.Fatalf("%q: got %v %s %s (host bits %v), flanneld reads %v %s %s (host bits %v)", key, ok, sn, sn6, hostBits, wok, wsn, wsn6, whostBits)
			}
		}
		if ok && (!sn.Addr().Is4() || sn.Masked() != sn || sn6.IsValid() && (!sn6.Addr().Is6() || sn6.Masked() != sn6)) {
			t.Fatalf("%q: subnets %s %s", key, sn, sn6)
		}
		if psn, psn6, err := ParseSubnetKey(key); err == nil && psn.Bits() < 32 && psn6.Bits() < 128 {
			if !ok || sn != psn || sn6 != psn6 {
				t.Fatalf("agentd's key %q (%s %s): flanneld reads %v %s %s", key, psn, psn6, ok, sn, sn6)
			}
		}
	})
}

// flanneldReads is flanneld's reading of a key (v0.28.10,
// pkg/subnet.ParseSubnetKey) done by hand: the first (leftmost) match of
// `(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$`, its quantifiers
// greedy and its group tried before it is skipped, as Go's regexp prefers;
// then net.ParseIP and strconv.ParseUint with 5 and 7 bits, as flanneld
// reads them. flanneld keeps the addresses as they are: hostBits says
// whether masking changed either.
func flanneldReads(key string) (sn, sn6 netip.Prefix, hostBits, ok bool) {
	for start := 0; start < len(key); start++ {
		c, matched := flanneldMatchAt(key, start)
		if !matched {
			continue
		}
		ip := net.ParseIP(c[0]).To4()
		bits, err := strconv.ParseUint(c[1], 10, 5)
		if ip == nil || err != nil {
			return netip.Prefix{}, netip.Prefix{}, false, false
		}
		masked := ip.Mask(net.CIDRMask(int(bits), 32))
		hostBits = !masked.Equal(ip)
		a, _ := netip.AddrFromSlice(masked)
		sn = netip.PrefixFrom(a, int(bits))
		if c[2] != "" {
			ip6 := net.ParseIP(c[2]).To16()
			bits6, err := strconv.ParseUint(c[3], 10, 7)
			if ip6 == nil || err != nil {
				return netip.Prefix{}, netip.Prefix{}, false, false
			}
			masked6 := ip6.Mask(net.CIDRMask(int(bits6), 128))
			hostBits = hostBits || !masked6.Equal(ip6)
			a6, _ := netip.AddrFromSlice(masked6)
			sn6 = netip.PrefixFrom(a6, int(bits6))
		}
		return sn, sn6, hostBits, true
	}
	return netip.Prefix{}, netip.Prefix{}, false, false
}

// flanneldMatchAt matches the pattern at key[start:] by backtracking, in the
// order of preference of Go's regexp, and returns the four groups.
func flanneldMatchAt(key string, start int) (groups [4]string, ok bool) {
	isDigit := func(b byte) bool { return '0' <= b && b <= '9' }
	isHex := func(b byte) bool { return isDigit(b) || 'a' <= b && b <= 'f' || b == ':' }
	// run matches one or more bytes of class, longest first.
	run := func(class func(byte) bool, i int, k func(int) bool) bool {
		j := i
		for j < len(key) && class(key[j]) {
			j++
		}
		for ; j > i; j-- {
			if k(j) {
				return true
			}
		}
		return false
	}
	lit := func(c byte, i int, k func(int) bool) bool { return i < len(key) && key[i] == c && k(i+1) }
	anyRune := func(i int, k func(int) bool) bool {
		if i >= len(key) {
			return false
		}
		r, size := utf8.DecodeRuneInString(key[i:])
		return r != '\n' && k(i+size)
	}
	end := func(i int) bool { return i == len(key) }
	var g [4]string
	v6 := func(i int) bool {
		return lit('&', i, func(i6 int) bool {
			return run(isHex, i6, func(j int) bool {
				return lit('-', j, func(l int) bool {
					return run(isDigit, l, func(e int) bool {
						g[2], g[3] = key[i6:j], key[l:e]
						return end(e)
					})
				})
			})
		})
	}
	ok = run(isDigit, start, func(i int) bool {
		return lit('.', i, func(i int) bool {
			return run(isDigit, i, func(i int) bool {
				return anyRune(i, func(i int) bool {
					return run(isDigit, i, func(i int) bool {
						return anyRune(i, func(i int) bool {
							return run(isDigit, i, func(a int) bool {
								return lit('-', a, func(l int) bool {
									return run(isDigit, l, func(e int) bool {
										g[0], g[1] = key[start:a], key[l:e]
										if v6(e) {
											return true
										}
										g[2], g[3] = "", ""
										return end(e)
									})
								})
							})
						})
					})
				})
			})
		})
	})
	return g, ok
}
