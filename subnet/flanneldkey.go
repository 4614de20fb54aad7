package subnet

import (
	"net/netip"
	"regexp"
	"strconv"
)

// flanneldKeyRule is the pattern flanneld (v0.28.10, and since it added
// dual-stack keys) matches a key under <prefix>/subnets/ against: it is
// anchored at the end only, and its second and third separators match any
// character. The first match is the one read; its IPv4 address must then
// parse (four decimal octets, none with a leading zero) and its length be at
// most 31, and an IPv6 half, when present, an address of lowercase hex and
// colons and a length of at most 127, or the key is no lease to flanneld.
var flanneldKeyRule = regexp.MustCompile(`(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$`)

// FlanneldSubnetKey reports the subnets flanneld reads key (relative to
// <prefix>/subnets/) as a lease of, or ok false when flanneld skips the key.
// It takes more keys than ParseSubnetKey: anything before the address
// (another path segment included), leading zeros in a length
// ("10.244.5.0-024"), host bits set ("10.244.5.7-24", returned masked:
// 10.244.5.0/24) and any spelling of the IPv6 address. It refuses two that
// ParseSubnetKey takes: a /32 and a /128. Such keys are no lease to agentd,
// which writes and watches canonical keys only, but flanneld hosts route the
// subnet to the key's PublicIP, so Acquire takes it as held.
func FlanneldSubnetKey(key string) (sn, sn6 netip.Prefix, ok bool) {
	m := flanneldKeyRule.FindStringSubmatch(key)
	if m == nil {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	sn, ok = flanneldPrefix(m[1], m[2], 5)
	if !ok || !sn.Addr().Is4() {
		return netip.Prefix{}, netip.Prefix{}, false
	}
	if m[3] != "" {
		if sn6, ok = flanneldPrefix(m[3], m[4], 7); !ok {
			return netip.Prefix{}, netip.Prefix{}, false
		}
	}
	return sn, sn6, true
}

// flanneldPrefix parses an address and a length of at most bitSize bits,
// as flanneld does (strconv.ParseUint takes leading zeros), masked.
func flanneldPrefix(addr, length string, bitSize int) (netip.Prefix, bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, false
	}
	bits, err := strconv.ParseUint(length, 10, bitSize)
	if err != nil {
		return netip.Prefix{}, false
	}
	p, err := a.Prefix(int(bits))
	return p, err == nil
}
