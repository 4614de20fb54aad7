package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Lease is one host's claim on a subnet of the cluster network, as stored under
// <prefix>/subnets/<key>.
type Lease struct {
	// Subnet is the IPv4 subnet; it is always valid.
	Subnet netip.Prefix
	// IPv6Subnet is the IPv6 subnet of a dual-stack lease; the zero Prefix otherwise.
	IPv6Subnet netip.Prefix
	Attrs      LeaseAttrs

	// LeaseID is the etcd lease the key is attached to; 0 marks a reservation,
	// which never expires.
	LeaseID int64
	// ModRevision is the etcd revision of the last write of the key; writes that
	// take over an existing key compare against it.
	ModRevision int64
	// CreateRevision is the revision the key was created at: it tells an
	// overwrite in place from a key deleted and created again by someone else.
	CreateRevision int64
	// Expiration is when the etcd lease runs out if nobody renews it; zero for
	// reservations and where it was not asked for.
	Expiration time.Time
}

// Reservation reports whether the key carries no etcd lease: an operator's
// reservation, which agentd keeps without a TTL.
func (l *Lease) Reservation() bool { return l.LeaseID == 0 }

// Key is the lease's key relative to <prefix>/subnets/.
func (l *Lease) Key() string { return MakeSubnetKey(l.Subnet, l.IPv6Subnet) }

// LeaseAttrs is the JSON value of a lease key. The field names and order are
// flannel's (PublicIP, PublicIPv6, BackendType, BackendData, BackendV6Data);
// HostID is ours and is ignored by flanneld's decoder.
type LeaseAttrs struct {
	PublicIP      netip.Addr
	PublicIPv6    netip.Addr
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
	// HostID identifies the host that wrote the lease, so that two hosts sharing
	// one public IP (behind a NAT) never take each other's subnet.
	HostID string
}

// leaseJSON is the wire shape. flannel writes PublicIPv6 as null when it is
// unset, and omits empty BackendType and backend data.
type leaseJSON struct {
	PublicIP      string          `json:"PublicIP"`
	PublicIPv6    *string         `json:"PublicIPv6"`
	BackendType   string          `json:"BackendType,omitempty"`
	BackendData   json.RawMessage `json:"BackendData,omitempty"`
	BackendV6Data json.RawMessage `json:"BackendV6Data,omitempty"`
	HostID        string          `json:"HostID,omitempty"`
}

// MarshalJSON writes the value exactly as flanneld would, plus HostID when set.
func (a LeaseAttrs) MarshalJSON() ([]byte, error) {
	w := leaseJSON{
		BackendType:   a.BackendType,
		BackendData:   a.BackendData,
		BackendV6Data: a.BackendV6Data,
		HostID:        a.HostID,
	}
	if !a.PublicIP.Is4() {
		return nil, fmt.Errorf("lease PublicIP %q is not an IPv4 address", a.PublicIP)
	}
	w.PublicIP = a.PublicIP.String()
	if a.PublicIPv6.IsValid() {
		s := a.PublicIPv6.String()
		w.PublicIPv6 = &s
	}
	return json.Marshal(w)
}

// UnmarshalJSON accepts what flanneld writes (field names case-insensitive, as
// encoding/json does) and rejects values that no peer could route to.
func (a *LeaseAttrs) UnmarshalJSON(b []byte) error {
	var w leaseJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	ip, err := netip.ParseAddr(w.PublicIP)
	if err != nil || !ip.Is4() {
		return fmt.Errorf("PublicIP %q is not an IPv4 address", w.PublicIP)
	}
	*a = LeaseAttrs{
		PublicIP:      ip,
		BackendType:   w.BackendType,
		BackendData:   nonNull(w.BackendData),
		BackendV6Data: nonNull(w.BackendV6Data),
		HostID:        w.HostID,
	}
	if w.PublicIPv6 != nil && *w.PublicIPv6 != "" {
		ip6, err := netip.ParseAddr(*w.PublicIPv6)
		if err != nil || !ip6.Is6() || ip6.Is4In6() {
			return fmt.Errorf("PublicIPv6 %q is not an IPv6 address", *w.PublicIPv6)
		}
		a.PublicIPv6 = ip6
	}
	return nil
}

func nonNull(m json.RawMessage) json.RawMessage {
	if len(m) == 0 || bytes.Equal(m, []byte("null")) {
		return nil
	}
	return m
}

// Equal reports whether two attribute sets would be written as the same value.
func (a LeaseAttrs) Equal(b LeaseAttrs) bool {
	return a.PublicIP == b.PublicIP && a.PublicIPv6 == b.PublicIPv6 &&
		a.BackendType == b.BackendType && a.HostID == b.HostID &&
		jsonEqual(a.BackendData, b.BackendData) && jsonEqual(a.BackendV6Data, b.BackendV6Data)
}

func jsonEqual(a, b json.RawMessage) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return false
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

// ParseLeaseValue decodes a lease value read from etcd.
func ParseLeaseValue(b []byte) (LeaseAttrs, error) {
	var a LeaseAttrs
	if err := json.Unmarshal(b, &a); err != nil {
		return LeaseAttrs{}, err
	}
	return a, nil
}

// MakeSubnetKey formats a key relative to <prefix>/subnets/: "10.244.5.0-24",
// or "10.244.5.0-24&fc00:0:0:5::-64" for a dual-stack lease.
func MakeSubnetKey(sn, sn6 netip.Prefix) string {
	k := sn.Addr().String() + "-" + strconv.Itoa(sn.Bits())
	if sn6.IsValid() {
		k += "&" + sn6.Addr().String() + "-" + strconv.Itoa(sn6.Bits())
	}
	return k
}

// ErrNotSubnetKey is wrapped by ParseSubnetKey's errors.
var ErrNotSubnetKey = errors.New("not a subnet key")

// ParseSubnetKey parses a key relative to <prefix>/subnets/. The address must be
// the first of its prefix, as flannel writes it.
func ParseSubnetKey(key string) (sn, sn6 netip.Prefix, err error) {
	v4, v6, dual := strings.Cut(key, "&")
	if sn, err = parseKeyPrefix(v4, false); err != nil {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w %q: %w", ErrNotSubnetKey, key, err)
	}
	if dual {
		if sn6, err = parseKeyPrefix(v6, true); err != nil {
			return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w %q: %w", ErrNotSubnetKey, key, err)
		}
	}
	// Writes rebuild the key from the prefixes, so only the canonical
	// spelling can be a lease: any other would be missed by them.
	if canon := MakeSubnetKey(sn, sn6); canon != key {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("%w %q: not in canonical form %q", ErrNotSubnetKey, key, canon)
	}
	return sn, sn6, nil
}

func parseKeyPrefix(s string, v6 bool) (netip.Prefix, error) {
	i := strings.LastIndexByte(s, '-')
	if i < 0 {
		return netip.Prefix{}, errors.New("no '-' before the prefix length")
	}
	addr, err := netip.ParseAddr(s[:i])
	if err != nil {
		return netip.Prefix{}, err
	}
	if addr.Zone() != "" || addr.Is4In6() || addr.Is6() != v6 {
		return netip.Prefix{}, fmt.Errorf("address %s is not of the expected family", addr)
	}
	length := s[i+1:]
	bits, err := strconv.Atoi(length)
	switch {
	case length == "" || strings.Trim(length, "0123456789") != "":
		return netip.Prefix{}, fmt.Errorf("prefix length %q is not a decimal number", length)
	case len(length) > 1 && length[0] == '0':
		// flanneld reads it (FlanneldSubnetKey), agentd writes none.
		return netip.Prefix{}, fmt.Errorf("prefix length %q has a leading zero", length)
	case err != nil:
		return netip.Prefix{}, fmt.Errorf("prefix length %q is out of range", length)
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr() != addr {
		return netip.Prefix{}, fmt.Errorf("%s has host bits set for /%d", addr, bits)
	}
	return p, nil
}
