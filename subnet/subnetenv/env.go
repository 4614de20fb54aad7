// Package subnetenv reads and writes subnet.env, the file in which agentd
// tells this host's other programs (dockerd through agentd-docker-opts, the
// CNI plugin, flannel's CNI plugin) its subnet and MTU. It is apart from
// package subnet, and imports nothing of agentd's but internal/atomicfile, so
// that those small programs do not link the etcd client: the CNI plugin runs
// for every pod.
package subnetenv

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/agentd/agentd/internal/atomicfile"
)

// Env is the content of subnet.env, the file dockerd drop-ins (--bip, --mtu)
// and flannel's CNI plugin read to learn this host's subnet.
type Env struct {
	// Network is the whole cluster network, FLANNEL_NETWORK.
	Network netip.Prefix
	// Subnet is this host's subnet with host part 1 (10.244.5.1/24), the
	// bridge address dockerd takes as --bip; FLANNEL_SUBNET.
	Subnet netip.Prefix
	// MTU is the MTU for containers, after the backend's overhead.
	MTU    int
	IPMasq bool

	// IPv6Network and IPv6Subnet are set together, for a dual-stack network
	// only; IPv6Subnet has host part 1 like Subnet.
	IPv6Network, IPv6Subnet netip.Prefix

	// HostID, AGENTD_HOST_ID, is the identity of the host that wrote the
	// file (see subnet.LoadOrCreateHostID): a host whose state directory was lost
	// recognises its own live lease by it. flannel's readers ignore it.
	HostID string
}

// The keys of subnet.env; their names are what flannel's CNI plugin reads.
const (
	envNetwork     = "FLANNEL_NETWORK"
	envSubnet      = "FLANNEL_SUBNET"
	envMTU         = "FLANNEL_MTU"
	envIPMasq      = "FLANNEL_IPMASQ"
	envIPv6Network = "FLANNEL_IPV6_NETWORK"
	envIPv6Subnet  = "FLANNEL_IPV6_SUBNET"
	envHostID      = "AGENTD_HOST_ID"
)

// LeaseSubnet is the leased subnet Subnet lies in: 10.244.5.0/24 for
// 10.244.5.1/24.
func (e Env) LeaseSubnet() netip.Prefix { return e.Subnet.Masked() }

// Write validates e and replaces the file at path with it atomically:
// readers see the old content or the new, never a mix, and the new content
// is on disk when Write returns. The directory is created (0755) if
// needed; the file's mode is 0644.
func Write(path string, e Env) error {
	b, err := format(e)
	if err != nil {
		return fmt.Errorf("subnet.env: %w", err)
	}
	return atomicfile.Write(path, b, 0o644)
}

// Read reads and parses the subnet.env file at path. A missing file is
// reported with an error that matches os.ErrNotExist.
func Read(path string) (Env, error) { return read(path, false) }

// ReadOwned is Read of a file that only root can have written in a place
// only root can change (atomicfile.ReadOwnedPath), for root's readers (the
// agent, the CNI plugin, agentd-docker-opts): a subnet.env that another user put in a directory
// they can write to, or in place of a directory they can rename, must not
// choose a host's subnet, its pods' addresses or docker0's. Its errors are
// Read's, or wrap atomicfile.ErrUntrusted.
func ReadOwned(path string) (Env, error) { return readWith(atomicfile.ReadOwnedPath, path, false) }

// ReadOwnedComplete is ReadOwned with ParseComplete's rules, for a reader
// that must not act on a damaged file (the CNI plugin).
func ReadOwnedComplete(path string) (Env, error) {
	return readWith(atomicfile.ReadOwnedPath, path, true)
}

func read(path string, complete bool) (Env, error) { return readWith(os.ReadFile, path, complete) }

// readWith reads the file at path with readFile and parses it. An error
// reading the file is readFile's, as is; an error about its content never
// wraps one, so callers can tell "cannot read" from "wrong content".
func readWith(readFile func(string) ([]byte, error), path string, complete bool) (Env, error) {
	b, err := readFile(path)
	if err != nil {
		return Env{}, err
	}
	e, err := parse(b, complete)
	if err != nil {
		return Env{}, fmt.Errorf("subnet.env %s: %w", path, err)
	}
	return e, nil
}

// Parse parses the content of a subnet.env file: KEY=VALUE lines, where
// blank lines, lines starting with '#', an "export " prefix, unknown keys and
// a pair of quotes around a value are tolerated, and a repeated key takes
// its last value (as a shell would). FLANNEL_NETWORK, FLANNEL_SUBNET and
// FLANNEL_MTU are required; FLANNEL_IPMASQ defaults to false (ParseComplete
// requires it); the two IPv6 keys come together or not at all; AGENTD_HOST_ID
// is optional. The error names the first problem found.
// The result passes the same checks as Write's input, so whatever Parse
// accepts, Write writes back.
func Parse(b []byte) (Env, error) {
	e, err := parse(b, false)
	if err != nil {
		return Env{}, fmt.Errorf("subnet.env: %w", err)
	}
	return e, nil
}

// ParseComplete is Parse for a reader that must not act on a file cut
// short or trimmed by hand, where Parse would return wrong values
// ("FLANNEL_MTU=145" from a file cut inside "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true",
// read with FLANNEL_IPMASQ's default). On top of Parse's rules:
//
//   - a file that is not empty ends with a newline, as every line agentd's
//     writer (format) and flanneld's end with one; so a file cut inside
//     a line, value or key, is refused whatever the cut left;
//   - FLANNEL_IPMASQ is required and is a boolean, as flannel's CNI plugin
//     requires it: guessing it would double or drop the masquerading.
//
// A file cut exactly at a line boundary cannot be told from a shorter file
// (the format has no end marker): it is refused only if a required key went
// with the cut lines. In agentd's order only the optional lines after
// FLANNEL_IPMASQ (the IPv6 pair, AGENTD_HOST_ID) can go unnoticed, whole.
//
// Whatever ParseComplete accepts, Parse accepts with the same result,
// and Write's output is always accepted.
func ParseComplete(b []byte) (Env, error) {
	e, err := parse(b, true)
	if err != nil {
		return Env{}, fmt.Errorf("subnet.env: %w", err)
	}
	return e, nil
}

type envValue struct {
	v    string
	line int
}

func parse(b []byte, complete bool) (Env, error) {
	lines := strings.Split(string(b), "\n")
	if complete && len(b) > 0 && b[len(b)-1] != '\n' {
		// Checked first: whatever else is wrong follows from the cut.
		return Env{}, fmt.Errorf("line %d: %q does not end with a newline: the file looks truncated (agentd and flanneld end every line with one)",
			len(lines), lines[len(lines)-1])
	}
	vals := make(map[string]envValue)
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return Env{}, fmt.Errorf("line %d: %q is not KEY=VALUE", i+1, line)
		}
		vals[strings.TrimSpace(k)] = envValue{unquote(strings.TrimSpace(v)), i + 1}
	}

	var e Env
	var errs []error
	prefix := func(key string, required bool, dst *netip.Prefix) {
		ev, ok := vals[key]
		switch {
		case ok && ev.v != "":
			p, err := netip.ParsePrefix(ev.v)
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %s %q is not a CIDR: %w", ev.line, key, ev.v, err))
			}
			*dst = p
		case required:
			errs = append(errs, fmt.Errorf("%s missing", key))
		}
	}
	prefix(envNetwork, true, &e.Network)
	prefix(envSubnet, true, &e.Subnet)
	prefix(envIPv6Network, false, &e.IPv6Network)
	prefix(envIPv6Subnet, false, &e.IPv6Subnet)
	if ev, ok := vals[envMTU]; ok && ev.v != "" {
		n, err := strconv.Atoi(ev.v)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s %q is not a number", ev.line, envMTU, ev.v))
		}
		e.MTU = n
	} else {
		errs = append(errs, fmt.Errorf("%s missing", envMTU))
	}
	if ev, ok := vals[envIPMasq]; ok && ev.v != "" {
		t, err := strconv.ParseBool(ev.v)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s %q is not true or false", ev.line, envIPMasq, ev.v))
		}
		e.IPMasq = t
	} else if complete {
		errs = append(errs, fmt.Errorf("%s missing", envIPMasq))
	}
	if ev, ok := vals[envHostID]; ok && ev.v != "" {
		id, err := ParseHostID([]byte(ev.v))
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s: %w", ev.line, envHostID, err))
		}
		e.HostID = id
	}
	if len(errs) > 0 {
		return Env{}, errs[0]
	}
	if err := e.check(); err != nil {
		return Env{}, err
	}
	return e, nil
}

// unquote removes one pair of matching single or double quotes.
func unquote(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
		return v[1 : len(v)-1]
	}
	return v
}

// format is the file content for e, in flannel's key order.
func format(e Env) ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s=%s\n%s=%s\n%s=%d\n%s=%t\n",
		envNetwork, e.Network, envSubnet, e.Subnet, envMTU, e.MTU, envIPMasq, e.IPMasq)
	if e.IPv6Network.IsValid() {
		fmt.Fprintf(&b, "%s=%s\n%s=%s\n", envIPv6Network, e.IPv6Network, envIPv6Subnet, e.IPv6Subnet)
	}
	if e.HostID != "" {
		fmt.Fprintf(&b, "%s=%s\n", envHostID, e.HostID)
	}
	return []byte(b.String()), nil
}

// Minimum and maximum MTU: the smallest every IPv4 link must carry (RFC 791)
// and the largest an IP packet can be.
const (
	minMTU = 68
	maxMTU = 65535
)

// check holds the invariants both Parse and Write enforce.
func (e Env) check() error {
	if e.HostID != "" {
		if id, err := ParseHostID([]byte(e.HostID)); err != nil || id != e.HostID {
			return fmt.Errorf("%s %q is not a host id", envHostID, e.HostID)
		}
	}
	if e.IPv6Network.IsValid() != e.IPv6Subnet.IsValid() {
		missing := envIPv6Subnet
		if !e.IPv6Network.IsValid() {
			missing = envIPv6Network
		}
		return fmt.Errorf("%s missing: the IPv6 keys come in pairs", missing)
	}
	fams := []struct {
		netKey, subKey string
		network, sn    netip.Prefix
		f              family
	}{
		{envNetwork, envSubnet, e.Network, e.Subnet, ipv4},
		{envIPv6Network, envIPv6Subnet, e.IPv6Network, e.IPv6Subnet, ipv6},
	}
	for i, fm := range fams {
		if i > 0 && !fm.network.IsValid() && !fm.sn.IsValid() {
			continue // no IPv6
		}
		if err := checkPair(fm.f, fm.netKey, fm.subKey, fm.network, fm.sn); err != nil {
			return err
		}
	}
	if e.MTU < minMTU || e.MTU > maxMTU {
		return fmt.Errorf("%s %d is out of range [%d, %d]", envMTU, e.MTU, minMTU, maxMTU)
	}
	return nil
}

// family is what checkPair needs of an address family.
type family struct {
	name string
	bits int
}

var (
	ipv4 = family{"IPv4", 32}
	ipv6 = family{"IPv6", 128}
)

// is reports whether a is of family f; an IPv4-mapped IPv6 address is of
// neither, as for the network config (package subnet's family, which this
// mirrors so as not to import subnet).
func (f family) is(a netip.Addr) bool {
	if f.bits == 32 {
		return a.Is4()
	}
	return a.Is6() && !a.Is4In6()
}

func checkPair(f family, netKey, subKey string, network, sn netip.Prefix) error {
	switch {
	case !network.IsValid():
		return fmt.Errorf("%s missing", netKey)
	case !f.is(network.Addr()):
		return fmt.Errorf("%s %s is not an %s CIDR", netKey, network, f.name)
	case network.Masked() != network:
		return fmt.Errorf("%s %s has host bits set", netKey, network)
	case !sn.IsValid():
		return fmt.Errorf("%s missing", subKey)
	case !f.is(sn.Addr()):
		return fmt.Errorf("%s %s is not an %s CIDR", subKey, sn, f.name)
	case sn.Bits() < network.Bits() || !network.Contains(sn.Addr()):
		return fmt.Errorf("%s %s is not inside %s %s", subKey, sn, netKey, network)
	case sn.Bits() < f.bits-1 && sn.Masked().Addr() == sn.Addr():
		// dockerd's --bip and the CNI bridge need a host address.
		return fmt.Errorf("%s %s is a network address; want a host address such as %s",
			subKey, sn, netip.PrefixFrom(sn.Addr().Next(), sn.Bits()))
	}
	return nil
}
