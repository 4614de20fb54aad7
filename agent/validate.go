package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/backend/iptables"
)

// Defaults of the settings. run/agentd uses them as its flag defaults, so the
// daemon's --help and a Config built by DefaultConfig agree.
const (
	DefaultEtcdEndpoint   = "http://127.0.0.1:2379"
	DefaultEtcdPrefix     = "/coreos.com/network"
	DefaultSubnetFile     = "/run/flannel/subnet.env"
	DefaultStateDir       = "/var/lib/agentd"
	DefaultSubnetLeaseTTL = 24 * time.Hour
	DefaultResyncInterval = 30 * time.Second
	// DefaultIPTablesResync is flanneld's --iptables-resync default.
	DefaultIPTablesResync = 5 * time.Second
	// MaxResyncInterval bounds ResyncInterval and IPTablesResync: a check
	// of the kernel or of the rules less than once a day is no check, and
	// larger values overflowed (the health server's heartbeat limit,
	// 3*ResyncInterval+1m; --iptables-resync's seconds times 1e9).
	MaxResyncInterval = 24 * time.Hour
	// DefaultEtcdEndpointCheckInterval: a member that is down, without a
	// leader or with an alarm shows within half a minute, for one small
	// request per endpoint.
	DefaultEtcdEndpointCheckInterval = 30 * time.Second
)

// maxLeaseTTL is etcd's upper bound for a lease TTL (9e9 seconds).
const maxLeaseTTL = 9_000_000_000 * time.Second

// DefaultConfig returns a Config holding every default. Callers (the flag
// layer, tests) start from it and override fields.
//
// There is deliberately no "fill in the zero fields" method: a zero bool
// cannot be told apart from an explicit false (IPTablesForwardRules defaults
// to true), and silently defaulting an empty field would hide a caller's
// mistake that Validate should report.
func DefaultConfig() Config {
	return Config{
		EtcdEndpoints:             []string{DefaultEtcdEndpoint},
		EtcdPrefix:                DefaultEtcdPrefix,
		SubnetFile:                DefaultSubnetFile,
		IPTablesForwardRules:      true,
		SubnetLeaseTTL:            DefaultSubnetLeaseTTL,
		ResyncInterval:            DefaultResyncInterval,
		IPTablesResync:            DefaultIPTablesResync,
		EtcdEndpointCheckInterval: DefaultEtcdEndpointCheckInterval,
		StateDir:                  DefaultStateDir,
	}
}

// ConfigError is a setting that failed validation. It is named by the agentd
// flag that sets it, because that is what an operator can change; the flag
// layer may name an environment variable instead when the value came from one.
type ConfigError struct {
	Flag  string // flag name without dashes, e.g. "etcd-cafile"
	Value string // the offending value as the operator wrote it
	Err   error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("invalid --%s %q: %v", e.Flag, e.Value, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

func configErrorf(flag, value string, format string, args ...any) error {
	return &ConfigError{Flag: flag, Value: value, Err: fmt.Errorf(format, args...)}
}

// Validate reports the first setting that Run could not work with, as a
// *ConfigError. It does not change c. It judges the settings alone, not the
// file system: the etcd TLS files need not exist yet (config management or a
// vault agent may write them after boot), so a missing or unreadable one is
// Run's failure, which a service manager retries, and not a usage error,
// which it does not. A combination that cannot work (a certificate without
// its key) is one.
func (c *Config) Validate() error {
	if err := c.ValidateEtcd(); err != nil {
		return err
	}

	for _, s := range c.Ifaces {
		if err := checkIfaceSpec(s); err != nil {
			return &ConfigError{Flag: "iface", Value: s, Err: err}
		}
	}
	for _, re := range c.IfaceRegexes {
		if re == nil {
			return configErrorf("iface-regex", "", "nil regular expression")
		}
	}
	if a := c.IfaceCanReach; a.IsValid() {
		if err := checkUnderlayAddr(a); err != nil {
			return &ConfigError{Flag: "iface-can-reach", Value: a.String(), Err: err}
		}
	}
	if a := c.PublicIP; a.IsValid() {
		if err := checkUnderlayAddr(a); err != nil {
			return &ConfigError{Flag: "public-ip", Value: a.String(), Err: err}
		}
		if a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
			return configErrorf("public-ip", a.String(), "peers cannot send to a loopback, multicast or broadcast address")
		}
	}

	if !slices.Contains(iptables.Modes, c.IPTablesMode) {
		return configErrorf("iptables-mode", c.IPTablesMode, "want nft, legacy, auto, or empty for the backend of the iptables command")
	}
	if m := c.DockerAcceptFwMark; !m.IsZero() {
		if err := m.Check(); err != nil {
			return &ConfigError{Flag: "docker-accept-fwmark", Value: m.String(), Err: err}
		}
	}

	if err := checkAbsPath(c.SubnetFile); err != nil {
		return &ConfigError{Flag: "subnet-file", Value: c.SubnetFile, Err: err}
	}
	if strings.HasSuffix(c.SubnetFile, "/") {
		return configErrorf("subnet-file", c.SubnetFile, "names a directory, want a file")
	}
	if err := checkAbsPath(c.StateDir); err != nil {
		return &ConfigError{Flag: "state-dir", Value: c.StateDir, Err: err}
	}
	if c.HealthzAddr != "" {
		if err := CheckListenAddr(c.HealthzAddr); err != nil {
			return &ConfigError{Flag: "healthz-addr", Value: c.HealthzAddr, Err: err}
		}
	}

	switch ttl := c.SubnetLeaseTTL; {
	case ttl < time.Second:
		return configErrorf("subnet-lease-ttl", ttl.String(), "must be at least 1s")
	case ttl%time.Second != 0:
		return configErrorf("subnet-lease-ttl", ttl.String(), "etcd lease TTLs are whole seconds")
	case ttl > maxLeaseTTL:
		return configErrorf("subnet-lease-ttl", ttl.String(), "etcd allows at most %s", maxLeaseTTL)
	}
	if c.ResyncInterval < time.Second {
		return configErrorf("resync-interval", c.ResyncInterval.String(), "must be at least 1s")
	}
	if c.ResyncInterval > MaxResyncInterval {
		return configErrorf("resync-interval", c.ResyncInterval.String(), "must be at most %s", MaxResyncInterval)
	}
	if c.IPTablesResync < time.Second {
		return configErrorf("iptables-resync", fmt.Sprint(int64(c.IPTablesResync/time.Second)), "must be at least 1 (seconds)")
	}
	if c.IPTablesResync > MaxResyncInterval {
		return configErrorf("iptables-resync", fmt.Sprint(int64(c.IPTablesResync/time.Second)), "must be at most %d (seconds)", MaxResyncInterval/time.Second)
	}
	if i := c.EtcdEndpointCheckInterval; i != 0 && i < time.Second {
		return configErrorf("etcd-endpoint-check-interval", i.String(), "must be at least 1s, or 0 to turn the checks off")
	}
	return nil
}

// ValidateEtcd is the part of Validate that judges the etcd settings
// (EtcdEndpoints to EtcdPassword), for tools that take agentd's etcd flags
// and nothing else (agentctl).
func (c *Config) ValidateEtcd() error {
	if len(c.EtcdEndpoints) == 0 {
		return configErrorf("etcd-endpoints", "", "no etcd endpoint given")
	}
	for _, ep := range c.EtcdEndpoints {
		if err := checkEndpoint(ep); err != nil {
			return &ConfigError{Flag: "etcd-endpoints", Value: redactEndpoint(ep), Err: err}
		}
	}
	if err := checkEndpointsTLS(c.EtcdEndpoints, c.EtcdCAFile != "" || c.EtcdCertFile != ""); err != nil {
		return &ConfigError{Flag: "etcd-endpoints", Value: strings.Join(c.EtcdEndpoints, ","), Err: err}
	}
	if !strings.HasPrefix(c.EtcdPrefix, "/") {
		return configErrorf("etcd-prefix", c.EtcdPrefix, "must start with /")
	}
	if c.EtcdCertFile != "" && c.EtcdKeyFile == "" {
		return configErrorf("etcd-keyfile", "", "required when --etcd-certfile is set")
	}
	if c.EtcdKeyFile != "" && c.EtcdCertFile == "" {
		return configErrorf("etcd-certfile", "", "required when --etcd-keyfile is set")
	}
	if c.EtcdPassword != "" && c.EtcdUsername == "" {
		return configErrorf("etcd-username", "", "required when --etcd-password is set")
	}
	return nil
}

// checkEndpoint accepts what the etcd v3 client dials: http(s) URLs with a
// host and a port, unix(s) socket URLs, also written unix:path (the
// client's and gRPC's form without "//"), and a bare host:port, as etcdctl
// writes endpoints, which the client reaches in plaintext or, with TLS
// files, over TLS (clientUsesTLS). flanneld takes all of them through the
// same client.
func checkEndpoint(ep string) error {
	if ep == "" {
		return errors.New("empty endpoint in the list")
	}
	for _, scheme := range []string{"unix:", "unixs:"} {
		if sock, ok := strings.CutPrefix(ep, scheme); ok && !strings.HasPrefix(sock, "//") {
			if sock == "" {
				return fmt.Errorf("no socket path after %s", scheme)
			}
			return nil
		}
	}
	// First, before any check whose error would quote a part of the
	// password (url.Parse's "invalid port" quotes what follows a ':').
	if redactEndpoint(ep) != ep {
		return errors.New("credentials in the URL are not used; use --etcd-username and --etcd-password")
	}
	if !strings.Contains(ep, "://") {
		return checkHostPort(ep)
	}
	u, err := url.Parse(ep)
	if err != nil {
		// Not url.Parse's *url.Error: ConfigError quotes the URL already.
		return errors.Unwrap(err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" || u.Hostname() == "" {
			return errors.New("no host in URL")
		}
		// Without a port the client hands the host alone to net.Dial,
		// which fails ("missing port in address"): its own resolver adds
		// no default port, where gRPC's DNS resolver would add 443
		// (TestClientDialsNoDefaultPort).
		p := u.Port()
		if p == "" {
			fix := url.URL{Scheme: u.Scheme, Host: net.JoinHostPort(u.Hostname(), "2379")}
			return fmt.Errorf("no port, and the etcd client dials none by default; etcd's client port is usually 2379: write %s", fix.String())
		}
		if _, err := parsePortNumber(p); err != nil {
			return err
		}
	case "unix", "unixs":
		// url.Parse lowers the scheme; the client does not. It takes
		// only unix: and unixs: for a socket: UNIXS:// it dials as a TCP
		// address, which fails, and UNIX:// it dials, but checks the
		// certificate of a TLS server against the whole path.
		if written := ep[:len(u.Scheme)]; written != u.Scheme {
			return fmt.Errorf("write the scheme in lower case (%s://): the etcd client does not take %s:// for a socket", u.Scheme, written)
		}
		if u.Host == "" && u.Path == "" {
			return errors.New("no socket path in URL")
		}
	default:
		return fmt.Errorf("scheme %q not supported, want http, https, unix or unixs", u.Scheme)
	}
	return nil
}

// checkHostPort checks an endpoint written without a scheme: host:port,
// the host an IP address (in brackets for IPv6) or a host name.
func checkHostPort(ep string) error {
	host, port, err := net.SplitHostPort(ep)
	if ae := (*net.AddrError)(nil); errors.As(err, &ae) && ae.Err == "missing port in address" {
		return fmt.Errorf("no scheme and no port; want host:port or a URL, such as %s:2379 or http://%s:2379", ep, ep)
	}
	if err != nil {
		return fmt.Errorf("neither a URL nor host:port: %w", err)
	}
	if host == "" {
		return errors.New("no host")
	}
	if _, err := parsePortNumber(port); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err != nil && !IsHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

// redactEndpoint is ep as a message may quote it: the user information of
// a URL (http://user:password@host:2379, or the same without the scheme)
// replaced by xxxxx, so that an endpoint refused for holding it, or for
// anything else, puts no password in the journal or a terminal's history.
// The user information of an http(s) URL, or of one without a scheme, ends
// at the last '@' wherever it is, not at the first '/', '?' or '#' as
// url.Parse has it: a password may hold those (a base64 one holds '/'), and
// the etcd client uses no path. A socket's path may hold '@': unix:path is
// left as it is, and the user information of unix(s)://… ends at the
// first '/'.
func redactEndpoint(ep string) string {
	if strings.HasPrefix(ep, "unix:") && !strings.HasPrefix(ep, "unix://") ||
		strings.HasPrefix(ep, "unixs:") && !strings.HasPrefix(ep, "unixs://") {
		return ep
	}
	scheme, rest, ok := strings.Cut(ep, "://")
	if !ok {
		scheme, rest = "", ep
	} else {
		scheme += "://"
	}
	// head is the part of rest that may hold the user information.
	head := rest
	if s := strings.ToLower(scheme); s == "unix://" || s == "unixs://" {
		head, _, _ = strings.Cut(rest, "/")
	}
	at := strings.LastIndexByte(head, '@')
	if at < 0 {
		return ep
	}
	return scheme + "xxxxx" + rest[at:]
}

// checkEndpointsTLS refuses a list of endpoints of which some would be
// reached with TLS and others without, haveTLS saying whether TLS files are
// given: the etcd client reaches all of them as it reaches the first
// (clientUsesTLS), so an https endpoint after an http one would be reached
// in plaintext, and an http one after an https one over TLS.
func checkEndpointsTLS(endpoints []string, haveTLS bool) error {
	first := endpoints[0]
	useTLS := clientUsesTLS(first, haveTLS)
	for _, ep := range endpoints[1:] {
		if clientUsesTLS(ep, haveTLS) == useTLS {
			continue
		}
		how := "in plaintext"
		if useTLS {
			how = "over TLS"
		}
		return fmt.Errorf("the etcd client reaches every endpoint as it reaches the first, so %s would be reached %s like %s; give all endpoints the same scheme", ep, how, first)
	}
	return nil
}

// checkIfaceSpec accepts an IPv4 address or a name the kernel would allow for
// an interface (the rules of dev_valid_name).
func checkIfaceSpec(s string) error {
	if a, err := netip.ParseAddr(s); err == nil {
		return checkUnderlayAddr(a.Unmap())
	}
	switch {
	case s == "":
		return errors.New("empty interface name")
	case len(s) > 15:
		return errors.New("interface names are at most 15 bytes")
	case s == "." || s == "..":
		return errors.New("not an interface name")
	case strings.ContainsAny(s, "/: \t\n\v\f\r"):
		return errors.New("not an interface name or an IP address")
	}
	return nil
}

// checkUnderlayAddr checks an address that names or reaches the underlay.
// agentd's underlay is IPv4 (the lease's PublicIP). The flag layer unmaps
// IPv4-mapped IPv6 addresses; a Config must hold the plain IPv4 form.
func checkUnderlayAddr(a netip.Addr) error {
	if !a.Is4() {
		return errors.New("the underlay is IPv4; want an IPv4 address")
	}
	if a.IsUnspecified() {
		return errors.New("unspecified address")
	}
	return nil
}

func checkAbsPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case !filepath.IsAbs(p):
		return errors.New("want an absolute path")
	}
	return nil
}

// CheckListenAddr accepts host:port where host is empty (all addresses),
// an IP address or a host name, and port is 0-65535 (0: any free port).
// internal/healthzaddr judges the health server's address with it.
func CheckListenAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if _, err := parsePortNumber(port); err != nil {
		return err
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !IsHostname(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	return nil
}

func parsePortNumber(s string) (int, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("port %q: want a number from 0 to 65535", s)
	}
	return int(n), nil
}

// IsHostname reports whether h is a syntactically valid DNS host name
// (RFC 1123 labels), as a listen address may name one.
func IsHostname(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
}
