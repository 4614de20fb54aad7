package subnet

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
)

// Config is the network config stored at <prefix>/config, after defaults.
type Config struct {
	EnableIPv4 bool
	Network    netip.Prefix
	SubnetLen  int
	SubnetMin  netip.Addr
	SubnetMax  netip.Addr

	EnableIPv6    bool
	IPv6Network   netip.Prefix
	IPv6SubnetLen int
	IPv6SubnetMin netip.Addr
	IPv6SubnetMax netip.Addr

	// BackendType is Backend's "Type" in lower case, "vxlan" when absent.
	BackendType string
	// Backend is the raw backend object; each backend decodes its own keys.
	Backend json.RawMessage
}

// DefaultBackendType is the backend used when the config's Backend has no
// Type. flannel's code and documentation disagree here (udp and vxlan); we
// follow the documentation.
const DefaultBackendType = "vxlan"

// ConfigError is the error ParseConfig and Validate return for a config that
// cannot be used. Its text names the JSON key at fault:
//
//	config: "SubnetLen": 31 is longer than /30
type ConfigError struct {
	// Key is the JSON key at fault as the documentation spells it
	// ("Backend.Type" for a nested one), or "" when the document as a whole is
	// (a JSON syntax error, a top-level value that is not an object).
	Key string
	Err error
}

func (e *ConfigError) Error() string {
	if e.Key == "" {
		return "config: " + e.Err.Error()
	}
	return "config: " + strconv.Quote(e.Key) + ": " + e.Err.Error()
}

func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(key, format string, args ...any) error {
	return &ConfigError{Key: key, Err: fmt.Errorf(format, args...)}
}

// configJSON is the document as written by operators. Strings stay strings
// here so that a bad address is reported with its key, not as a JSON error.
// encoding/json matches keys case-insensitively, as flanneld does.
type configJSON struct {
	EnableIPv4 *bool
	Network    string
	SubnetLen  int
	SubnetMin  string
	SubnetMax  string

	EnableIPv6    bool
	IPv6Network   string
	IPv6SubnetLen int
	IPv6SubnetMin string
	IPv6SubnetMax string

	// EnableNFTables is read only so that a value other than true or false
	// is refused naming it, as flanneld refuses it. Either way agentd's
	// rules go through the iptables command (its nft or legacy backend,
	// --iptables-mode) and do what flanneld's do in either mode:
	// masquerade (with --ip-masq) and accept in FORWARD the same traffic.
	EnableNFTables bool

	Backend json.RawMessage
}

// ParseConfig parses the network config JSON, fills in flannel's defaults and
// validates the result. Errors are *ConfigError.
//
// Choices where flannel is loose or silent:
//   - Keys match case-insensitively; unknown keys are ignored (flanneld ignores
//     them too, and a config may carry keys meant for other tools).
//   - A Network or IPv6Network with host bits set ("10.244.3.0/16") is masked
//     to its network address, as flanneld does.
//   - SubnetLen and IPv6SubnetLen 0, and SubnetMin/SubnetMax given as "" or as
//     the unspecified address ("0.0.0.0", "::"), mean "use the default", as in
//     flanneld.
//   - EnableIPv4 false (an IPv6-only network) is rejected: agentd's leases
//     always carry an IPv4 subnet.
//   - With EnableIPv6 false the IPv6 keys are ignored and the IPv6 fields of
//     the result stay zero.
//   - Backend absent or null becomes {} so a backend can always decode it;
//     an absent or empty Backend.Type becomes DefaultBackendType (see
//     BackendTypeDefaulted). Backend.Type is matched in any case, as
//     flanneld does ("VXLAN" is vxlan): BackendType is in lower case.
func ParseConfig(b []byte) (*Config, error) {
	var raw configJSON
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, jsonConfigErr("", err)
	}
	c := &Config{
		EnableIPv4: raw.EnableIPv4 == nil || *raw.EnableIPv4,
		EnableIPv6: raw.EnableIPv6,
	}
	if !c.EnableIPv4 {
		return nil, errIPv4Required
	}
	if raw.Network == "" && raw.EnableIPv4 == nil {
		// parsePool's message names "EnableIPv4", which the operator
		// may never have written: it is true by default.
		return nil, errNetworkMissing
	}
	p4, err := parsePool(&ipv4, raw.Network, raw.SubnetLen, raw.SubnetMin, raw.SubnetMax)
	if err != nil {
		return nil, err
	}
	c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax = p4.network, p4.subnetLen, p4.min, p4.max
	if c.EnableIPv6 {
		p6, err := parsePool(&ipv6, raw.IPv6Network, raw.IPv6SubnetLen, raw.IPv6SubnetMin, raw.IPv6SubnetMax)
		if err != nil {
			return nil, err
		}
		c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax = p6.network, p6.subnetLen, p6.min, p6.max
	}
	if c.Backend, c.BackendType, err = parseBackend(raw.Backend); err != nil {
		return nil, err
	}
	return c, nil
}

var errIPv4Required = &ConfigError{Key: "EnableIPv4", Err: errors.New(
	"false is not supported: agentd leases always carry an IPv4 subnet, so IPv4 is required")}

var errNetworkMissing = &ConfigError{Key: "Network", Err: errors.New(
	`missing; it is required: the IPv4 CIDR of the whole overlay, e.g. "10.244.0.0/16"`)}

// parsePool parses one family's keys and fills in their defaults.
func parsePool(f *family, network string, subnetLen int, smin, smax string) (pool, error) {
	if network == "" {
		return pool{}, configErr(f.keyNetwork, "missing; it is required when %q is true", f.keyEnable)
	}
	n, err := netip.ParsePrefix(network)
	if err != nil {
		return pool{}, configErr(f.keyNetwork, "%q is not an %s CIDR: %w", network, f.name, err)
	}
	if !f.is(n.Addr()) {
		return pool{}, configErr(f.keyNetwork, "%q is not an %s CIDR", network, f.name)
	}
	p := pool{f: f, network: n.Masked(), subnetLen: subnetLen}
	if p.min, err = f.parseBound(f.keyMin, smin); err != nil {
		return pool{}, err
	}
	if p.max, err = f.parseBound(f.keyMax, smax); err != nil {
		return pool{}, err
	}
	return p, p.complete()
}

// parseBound parses SubnetMin or SubnetMax; the zero Addr means "default".
func (f *family) parseBound(key, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, configErr(key, "%q is not an %s address: %w", s, f.name, err)
	}
	if !f.is(a) || a.Zone() != "" {
		return netip.Addr{}, configErr(key, "%q is not an %s address", s, f.name)
	}
	if a.IsUnspecified() {
		return netip.Addr{}, nil // flanneld treats 0.0.0.0 as unset
	}
	return a, nil
}

func parseBackend(b json.RawMessage) (raw json.RawMessage, typ string, err error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return json.RawMessage("{}"), DefaultBackendType, nil
	}
	if b[0] != '{' {
		return nil, "", configErr("Backend", "got JSON %s, want an object", jsonValueKind(b))
	}
	t, err := backendTypeOf(b)
	if err != nil {
		return nil, "", err
	}
	if t == "" {
		t = DefaultBackendType
	}
	return b, strings.ToLower(t), nil
}

// backendTypeOf is Backend's Type, "" when absent, empty or null.
func backendTypeOf(b json.RawMessage) (string, error) {
	var bt struct{ Type *string }
	if err := json.Unmarshal(b, &bt); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field == "Type" {
			return "", configErr("Backend.Type", "got JSON %s, want a string", te.Value)
		}
		return "", jsonConfigErr("Backend", err)
	}
	if bt.Type == nil {
		return "", nil
	}
	return *bt.Type, nil
}

// BackendTypeDefaulted reports whether BackendType is DefaultBackendType only
// because the config's Backend has no Type, so the agent can say so in its
// log: flanneld's code falls back to udp where its documentation says vxlan.
func (c *Config) BackendTypeDefaulted() bool {
	if c.BackendType != DefaultBackendType {
		return false
	}
	t, err := backendTypeOf(c.Backend)
	return err != nil || t == ""
}

// jsonConfigErr turns an encoding/json error into a ConfigError that names
// the key (for a type error) or the byte offset (for a syntax error).
func jsonConfigErr(within string, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return &ConfigError{Key: within, Err: &jsonError{fmt.Sprintf("invalid JSON at byte offset %d: %s", se.Offset, se), err}}
	case errors.As(err, &te) && te.Field != "":
		key := te.Field
		if within != "" {
			key = within + "." + key
		}
		return &ConfigError{Key: key, Err: &jsonError{fmt.Sprintf("got JSON %s at byte offset %d, want %s",
			te.Value, te.Offset, jsonTypeName(te.Type)), err}}
	case errors.As(err, &te):
		return &ConfigError{Key: within, Err: &jsonError{fmt.Sprintf("got JSON %s, want an object", te.Value), err}}
	}
	return &ConfigError{Key: within, Err: err}
}

// jsonError words an encoding/json error in the config's terms (JSON keys,
// not Go field names) and still unwraps to it.
type jsonError struct {
	msg string
	err error
}

func (e *jsonError) Error() string { return e.msg }
func (e *jsonError) Unwrap() error { return e.err }

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.String:
		return "a string"
	}
	return "an object"
}

func jsonValueKind(b []byte) string {
	switch b[0] {
	case '"':
		return "string"
	case '[':
		return "array"
	case 't', 'f':
		return "bool"
	}
	return "number"
}

// Validate checks the invariants that SubnetCount, NthSubnet, SubnetIndex and
// ValidLease rely on. ParseConfig's result always passes; it is for configs
// built in code. Errors are *ConfigError.
func (c *Config) Validate() error {
	if !c.EnableIPv4 {
		return errIPv4Required
	}
	if err := c.pool4().check(); err != nil {
		return err
	}
	if p6, ok := c.pool6(); ok {
		if err := p6.check(); err != nil {
			return err
		}
	}
	if c.BackendType == "" {
		return configErr("Backend.Type", "empty")
	}
	return nil
}

// String is a one-line summary for logs, with the JSON key names.
func (c *Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Network=%s SubnetLen=%d SubnetMin=%s SubnetMax=%s",
		c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax)
	if c.EnableIPv6 {
		fmt.Fprintf(&b, " IPv6Network=%s IPv6SubnetLen=%d IPv6SubnetMin=%s IPv6SubnetMax=%s",
			c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax)
	}
	fmt.Fprintf(&b, " Backend.Type=%s", c.BackendType)
	return b.String()
}

// SubnetCount is the number of subnets in the pool [SubnetMin, SubnetMax]
// that agentd picks from. In a dual-stack network agentd pairs the i-th IPv4
// subnet with the i-th IPv6 subnet when that is free, so the pool is as large
// as the smaller of the two ranges. (flanneld picks each half on its own, so
// a key's halves need not be a pair: see ValidLease.) Huge ranges are capped
// at math.MaxInt32. An invalid config has 0.
func (c *Config) SubnetCount() int {
	n := c.pool4().count()
	if p6, ok := c.pool6(); ok {
		n = min(n, p6.count())
	}
	return n
}

// NthSubnet is the i-th subnet of the pool, counting from SubnetMin at 0, and
// the IPv6 subnet paired with it (zero when IPv6 is off). Both are zero when
// i is not in [0, SubnetCount()).
func (c *Config) NthSubnet(i int) (sn, sn6 netip.Prefix) {
	if i < 0 || i >= c.SubnetCount() {
		return netip.Prefix{}, netip.Prefix{}
	}
	sn = c.pool4().nth(i)
	if p6, ok := c.pool6(); ok {
		sn6 = p6.nth(i)
	}
	return sn, sn6
}

// SubnetIndex is the inverse of NthSubnet: the index of sn in the pool. sn may
// be an IPv4 subnet, or an IPv6 one when IPv6 is on. It is false when sn is
// not a subnet NthSubnet returns: wrong family or length, host bits set,
// outside [SubnetMin, SubnetMax] or beyond SubnetCount.
func (c *Config) SubnetIndex(sn netip.Prefix) (int, bool) {
	i, err := c.subnetIndex(sn)
	return i, err == nil
}

func (c *Config) subnetIndex(sn netip.Prefix) (int, error) {
	p := c.pool4()
	if sn.Addr().Is6() {
		p6, ok := c.pool6()
		if !ok {
			return 0, fmt.Errorf("%s is an IPv6 subnet but IPv6 is not enabled", sn)
		}
		p = p6
	}
	return p.index(sn, c.SubnetCount())
}

// ValidLease reports why (sn, sn6) cannot be a lease of this network, or nil,
// as flanneld judges it: sn must be a subnet of the IPv4 range; sn6 one of the
// IPv6 range when IPv6 is on, any of them (flanneld picks it on its own), and
// the zero Prefix when IPv6 is off.
func (c *Config) ValidLease(sn, sn6 netip.Prefix) error {
	if !sn.Addr().Is4() {
		return fmt.Errorf("lease subnet %s is not an IPv4 subnet", sn)
	}
	if _, err := c.pool4().place(sn); err != nil {
		return fmt.Errorf("lease subnet %w", err)
	}
	p6, dual := c.pool6()
	switch {
	case !dual && sn6.IsValid():
		return fmt.Errorf("lease %s has the IPv6 subnet %s but the network config does not enable IPv6", sn, sn6)
	case !dual:
		return nil
	case !sn6.IsValid():
		return fmt.Errorf("lease %s has no IPv6 subnet but the network is dual-stack", sn)
	}
	if _, err := p6.place(sn6); err != nil {
		return fmt.Errorf("lease %s: IPv6 subnet %w", sn, err)
	}
	return nil
}

// family holds what differs between the IPv4 and IPv6 halves of a config, so
// that defaults, checks and arithmetic are written once.
type family struct {
	name                                          string
	bits                                          int
	keyEnable, keyNetwork, keyLen, keyMin, keyMax string
	// maxLen is the longest subnet: four addresses (network, bridge, one
	// container, broadcast).
	maxLen int
	// Networks of bigNet bits or shorter get defLen subnets; longer ones are
	// split in four (+2 bits).
	bigNet, defLen int
}

var (
	ipv4 = family{"IPv4", 32, "EnableIPv4", "Network", "SubnetLen", "SubnetMin", "SubnetMax", 30, 22, 24}
	ipv6 = family{"IPv6", 128, "EnableIPv6", "IPv6Network", "IPv6SubnetLen", "IPv6SubnetMin", "IPv6SubnetMax", 126, 62, 64}
)

func (f *family) is(a netip.Addr) bool {
	if f.bits == 32 {
		return a.Is4()
	}
	return a.Is6() && !a.Is4In6()
}

// pool is one family's half of a Config.
type pool struct {
	f         *family
	network   netip.Prefix
	subnetLen int
	min, max  netip.Addr
}

func (c *Config) pool4() pool {
	return pool{&ipv4, c.Network, c.SubnetLen, c.SubnetMin, c.SubnetMax}
}

func (c *Config) pool6() (pool, bool) {
	return pool{&ipv6, c.IPv6Network, c.IPv6SubnetLen, c.IPv6SubnetMin, c.IPv6SubnetMax}, c.EnableIPv6
}

// complete fills in the defaults of a pool whose network is set, then checks
// it. The subnet length is checked before it is used to compute defaults.
func (p *pool) complete() error {
	f := p.f
	prefix := p.network.Bits()
	if p.subnetLen == 0 && prefix <= f.maxLen-2 {
		// A network that is too small is reported by checkLen.
		switch {
		case prefix <= f.bigNet:
			p.subnetLen = f.defLen
		default:
			p.subnetLen = prefix + 2
		}
	}
	if err := p.checkLen(); err != nil {
		return err
	}
	size := one.lsh(p.hostBits())
	if !p.min.IsValid() {
		// The first subnet is skipped: its .0 would be the network address.
		p.min = fromU128(toU128(p.network.Addr()).add(size), f)
	}
	if !p.max.IsValid() {
		last := toU128(p.network.Addr()).or(lowMask(f.bits - prefix))
		p.max = fromU128(last.sub(size).add(one), f)
	}
	return p.check()
}

func (p *pool) hostBits() int { return p.f.bits - p.subnetLen }

func (p *pool) checkLen() error {
	f, prefix := p.f, p.network.Bits()
	switch {
	case prefix > f.maxLen-2:
		return configErr(f.keyNetwork, "%s: network too small, the smallest is /%d", p.network, f.maxLen-2)
	case p.subnetLen <= 0 || p.subnetLen > f.bits:
		return configErr(f.keyLen, "%d is not an %s prefix length", p.subnetLen, f.name)
	case p.subnetLen > f.maxLen:
		return configErr(f.keyLen, "%d is longer than /%d", p.subnetLen, f.maxLen)
	case p.subnetLen < prefix+2:
		return configErr(f.keyLen, "%d is shorter than /%d: %q %s must hold at least four subnets",
			p.subnetLen, prefix+2, f.keyNetwork, p.network)
	}
	return nil
}

// check validates a completed pool. It allocates only when it fails, so the
// helpers can call it on every use.
func (p pool) check() error {
	f := p.f
	if !p.network.IsValid() || !f.is(p.network.Addr()) {
		return configErr(f.keyNetwork, "%s is not an %s CIDR", p.network, f.name)
	}
	if p.network.Masked() != p.network {
		return configErr(f.keyNetwork, "%s has host bits set", p.network)
	}
	if err := p.checkLen(); err != nil {
		return err
	}
	if err := p.checkBound(f.keyMin, p.min); err != nil {
		return err
	}
	if err := p.checkBound(f.keyMax, p.max); err != nil {
		return err
	}
	if p.min.Compare(p.max) > 0 {
		return configErr(f.keyMin, "%s is after %q %s", p.min, f.keyMax, p.max)
	}
	return nil
}

func (p pool) checkBound(key string, a netip.Addr) error {
	f := p.f
	switch {
	case !a.IsValid() || !f.is(a) || a.Zone() != "":
		return configErr(key, "%s is not an %s address", a, f.name)
	case !p.network.Contains(a):
		return configErr(key, "%s is outside %q %s", a, f.keyNetwork, p.network)
	case !toU128(a).and(lowMask(p.hostBits())).isZero():
		return configErr(key, "%s is not the first address of a /%d (%q)", a, p.subnetLen, f.keyLen)
	}
	return nil
}

// count is the number of subnets in [min, max], capped at math.MaxInt32; 0
// for an invalid pool.
func (p pool) count() int {
	if p.check() != nil {
		return 0
	}
	n := toU128(p.max).sub(toU128(p.min)).rsh(p.hostBits())
	if n.hi != 0 || n.lo >= math.MaxInt32 {
		return math.MaxInt32
	}
	return int(n.lo) + 1
}

// nth is the i-th subnet from min; i must be below count().
func (p pool) nth(i int) netip.Prefix {
	a := toU128(p.min).add(u128{lo: uint64(i)}.lsh(p.hostBits()))
	return netip.PrefixFrom(fromU128(a, p.f), p.subnetLen)
}

// index is the inverse of nth for indexes below limit.
func (p pool) index(sn netip.Prefix, limit int) (int, error) {
	i, err := p.place(sn)
	if err != nil {
		return 0, err
	}
	if i.hi != 0 || i.lo >= uint64(limit) {
		return 0, fmt.Errorf("%s is beyond the first %d subnets of the pool", sn, limit)
	}
	return int(i.lo), nil
}

// place is the position of sn in the pool, counted in subnets from min
// without count's cap, or why sn is not one of its subnets.
func (p pool) place(sn netip.Prefix) (u128, error) {
	f := p.f
	if err := p.check(); err != nil {
		return u128{}, fmt.Errorf("%s cannot be placed: the network config is invalid: %w", sn, err)
	}
	switch {
	case !sn.IsValid() || !f.is(sn.Addr()):
		return u128{}, fmt.Errorf("%s is not an %s subnet", sn, f.name)
	case sn.Bits() != p.subnetLen:
		return u128{}, fmt.Errorf("%s is not a /%d", sn, p.subnetLen)
	case sn.Masked() != sn:
		return u128{}, fmt.Errorf("%s has host bits set", sn)
	case sn.Addr().Compare(p.min) < 0 || sn.Addr().Compare(p.max) > 0:
		return u128{}, fmt.Errorf("%s is outside the pool %s-%s of %s", sn, p.min, p.max, p.network)
	}
	return toU128(sn.Addr()).sub(toU128(p.min)).rsh(p.hostBits()), nil
}

// u128 is an address as a 128-bit number (IPv4 in the low 32 bits).
type u128 struct{ hi, lo uint64 }

var one = u128{lo: 1}

func toU128(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func fromU128(u u128, f *family) netip.Addr {
	if f.bits == 32 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

// lowMask has the n lowest bits set (all 128 for n >= 128).
func lowMask(n int) u128 { return one.lsh(n).sub(one) }

func (u u128) isZero() bool    { return u.hi == 0 && u.lo == 0 }
func (u u128) and(v u128) u128 { return u128{u.hi & v.hi, u.lo & v.lo} }
func (u u128) or(v u128) u128  { return u128{u.hi | v.hi, u.lo | v.lo} }
func (u u128) add(v u128) u128 {
	lo, c := bits.Add64(u.lo, v.lo, 0)
	hi, _ := bits.Add64(u.hi, v.hi, c)
	return u128{hi, lo}
}

func (u u128) sub(v u128) u128 {
	lo, b := bits.Sub64(u.lo, v.lo, 0)
	hi, _ := bits.Sub64(u.hi, v.hi, b)
	return u128{hi, lo}
}

func (u u128) lsh(n int) u128 {
	switch {
	case n <= 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: u.lo << (n - 64)}
	}
	return u128{u.hi<<n | u.lo>>(64-n), u.lo << n}
}

func (u u128) rsh(n int) u128 {
	switch {
	case n <= 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: u.hi >> (n - 64)}
	}
	return u128{u.hi >> n, u.lo>>n | u.hi<<(64-n)}
}
