package subnet

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"

	"github.com/agentd/agentd/internal/clip"
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
// subnet to the key's PublicIP when flanneld decodes its value too, so
// Acquire then takes it as held (FlanneldLeaseError). The key may also lie
// beside <prefix>/subnets/ (key relative to <prefix>/subnets then:
// flanneldSiblings).
func FlanneldSubnetKey(key string) (sn, sn6 netip.Prefix, ok bool) {
	sn, sn6, _, ok = flanneldSubnetKey(key)
	return sn, sn6, ok
}

// flanneldSubnetKey is FlanneldSubnetKey, and whether an address of the key
// has host bits set (FlanneldLeaseError.HostBits).
func flanneldSubnetKey(key string) (sn, sn6 netip.Prefix, hostBits, ok bool) {
	m := flanneldKeyRule.FindStringSubmatch(key)
	if m == nil {
		return netip.Prefix{}, netip.Prefix{}, false, false
	}
	sn, hostBits, ok = flanneldPrefix(m[1], m[2], 5)
	if !ok || !sn.Addr().Is4() {
		return netip.Prefix{}, netip.Prefix{}, false, false
	}
	if m[3] != "" {
		var hostBits6 bool
		if sn6, hostBits6, ok = flanneldPrefix(m[3], m[4], 7); !ok {
			return netip.Prefix{}, netip.Prefix{}, false, false
		}
		hostBits = hostBits || hostBits6
	}
	return sn, sn6, hostBits, true
}

// flanneldPrefix parses an address and a length of at most bitSize bits,
// as flanneld does (strconv.ParseUint takes leading zeros), masked, and
// says whether the address had host bits set.
func flanneldPrefix(addr, length string, bitSize int) (p netip.Prefix, hostBits, ok bool) {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, false, false
	}
	bits, err := strconv.ParseUint(length, 10, bitSize)
	if err != nil {
		return netip.Prefix{}, false, false
	}
	p, err = a.Prefix(int(bits))
	return p, err == nil && p.Addr() != a, err == nil
}

// FlanneldLeaseError is the error of a key agentd skips but flanneld reads
// as a lease: its key is no canonical lease key (Err, ParseSubnetKey's,
// which wraps ErrNotSubnetKey), or it is one but agentd cannot read its
// value (Err, the value's: {"PublicIP":…,"HostID":7}, {}), yet flanneld's
// key pattern reads the key (FlanneldSubnetKey) and flanneld's decoder its
// value. flanneld hosts route Subnet (and IPv6Subnet) to PublicIP and lease
// around it. A key whose value flanneld does not decode has Err alone:
// flanneld skips it ("Ignoring bad subnet node"), neither routing nor
// leasing around it.
type FlanneldLeaseError struct {
	Subnet, IPv6Subnet netip.Prefix
	// PublicIP is as flanneld reads it: 0.0.0.0 when the value has none.
	PublicIP netip.Addr
	// HostID is agentd's host identity in the value, when agentd can read
	// the value; flanneld ignores it.
	HostID string
	// HostBits is set when an address of the key has host bits set
	// ("10.244.5.7-24"; Subnet is masked, 10.244.5.0/24). flanneld
	// (v0.28.10, pkg/subnet.ParseSubnetKey) keeps them: its lease is of
	// 10.244.5.7/24. Its allocator masks when it compares (IP4Net.Overlaps),
	// so its hosts lease around Subnet; its udp backend masks too, and
	// routes Subnet to PublicIP (over the route of another key of Subnet:
	// the last written wins, and the key's deletion removes both); its vxlan
	// and host-gw backends hand the route to the kernel unmasked, which
	// refuses it ("Invalid prefix for given prefix length"): vxlan retries
	// it for about 50 s (retry-go's 10 tries), holding up the lease events
	// after it, then deletes the neighbour and the FDB entry of the value's
	// VtepMAC and PublicIP, a live host's if the value is a copy of its
	// lease; host-gw logs the refusal. agentd holds Subnet as for any key
	// flanneld reads (flanneldHeld): flanneld hosts lease around it, udp
	// ones route it, and a flanneld host whose public IP the key names
	// takes it as its own lease (findLeaseByIP) and uses the subnet.
	HostBits bool
	Err      error
}

// FlanneldHostBits says what flanneld hosts do with a key whose address has
// host bits set (FlanneldLeaseError.HostBits), for messages.
const FlanneldHostBits = "host bits set, which flanneld keeps: its hosts lease around that and udp hosts route it to the key's PublicIP, " +
	"but the kernel refuses vxlan and host-gw hosts the route, and vxlan hosts retry it for about 50 s, holding up the lease events after it, " +
	"then delete the FDB entry of the key's VtepMAC and PublicIP, a live host's if the value is a copy of its lease"

// Routing is what flanneld hosts do with the key's subnets, for messages:
// usual (what a message says of a key without host bits, "its hosts route
// that to the key's PublicIP"), or FlanneldHostBits.
func (e *FlanneldLeaseError) Routing(usual string) string {
	if e.HostBits {
		return FlanneldHostBits
	}
	return usual
}

func (e *FlanneldLeaseError) Error() string { return e.Err.Error() }
func (e *FlanneldLeaseError) Unwrap() error { return e.Err }

// HeldSubnets is the subnets flanneld reads the key as a lease of, for
// messages: "10.244.5.0/24", or "10.244.5.0/24 fc00:0:0:5::/64".
func (e *FlanneldLeaseError) HeldSubnets() string {
	if e.IPv6Subnet.IsValid() {
		return e.Subnet.String() + " " + e.IPv6Subnet.String()
	}
	return e.Subnet.String()
}

// flanneldLease returns keyErr (ParseSubnetKey's error for rel, a key
// relative to <prefix>/subnets/, or the value's error) as a
// FlanneldLeaseError when flanneld reads rel and value as a lease, and
// keyErr itself when it does not.
func flanneldLease(rel string, value []byte, keyErr error) error {
	sn, sn6, hostBits, ok := flanneldSubnetKey(rel)
	if !ok {
		return keyErr
	}
	pub, err := flanneldPublicIP(value)
	if err != nil {
		return keyErr
	}
	e := &FlanneldLeaseError{Subnet: sn, IPv6Subnet: sn6, PublicIP: pub, HostBits: hostBits, Err: keyErr}
	if a, err := ParseLeaseValue(value); err == nil {
		e.HostID = a.HostID
	}
	return e
}

// flanneldAttrs is flanneld's lease value (v0.28.10, pkg/lease.LeaseAttrs):
// decoding a value into it fails where flanneld's decoding fails.
type flanneldAttrs struct {
	PublicIP      flanneldIP4
	PublicIPv6    *flanneldIP6
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

// flanneldIP4 and flanneldIP6 decode as flanneld's pkg/ip.IP4 and IP6 do:
// the raw JSON value with its quotes trimmed (so null and numbers reach
// net.ParseIP, and fail), parsed by net.ParseIP, IPv4 (or IPv4-mapped)
// only for IP4, anything it parses for IP6. An absent PublicIP leaves
// flanneld's zero value, 0.0.0.0.
type flanneldIP4 struct{ a netip.Addr }

type flanneldIP6 struct{}

func (ip *flanneldIP4) UnmarshalJSON(j []byte) error {
	a := net.ParseIP(string(bytes.Trim(j, `"`))).To4()
	if a == nil {
		return fmt.Errorf("PublicIP %s is no IPv4 address to flanneld", clip.String(string(j)))
	}
	ip.a = netip.AddrFrom4([4]byte(a))
	return nil
}

func (*flanneldIP6) UnmarshalJSON(j []byte) error {
	if net.ParseIP(string(bytes.Trim(j, `"`))) == nil {
		return fmt.Errorf("PublicIPv6 %s is no IP address to flanneld", clip.String(string(j)))
	}
	return nil
}

// flanneldPublicIP decodes a lease value as flanneld does and returns its
// PublicIP, or the reason flanneld skips the value.
func flanneldPublicIP(value []byte) (netip.Addr, error) {
	a := flanneldAttrs{PublicIP: flanneldIP4{netip.IPv4Unspecified()}}
	if err := json.Unmarshal(value, &a); err != nil {
		return netip.Addr{}, err
	}
	return a.PublicIP.a, nil
}
