// Package healthzaddr decides the address of agentd's health server from
// its flags and the environment. agentd listens where Resolve says and
// agentctl status asks there, so the two read the same flags and variables
// the same way.
package healthzaddr

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/agentd/agentd/agent"
)

// The health server's flags: --healthz-addr, or flanneld's --healthz-ip
// with --healthz-port.
const (
	AddrFlag = "healthz-addr"
	IPFlag   = "healthz-ip"
	PortFlag = "healthz-port"
)

// Flags are the flags Resolve decides from, besides the environment.
var Flags = []string{AddrFlag, IPFlag, PortFlag}

// EnvPrefixes are the prefixes of agentd's variables, best first: a flag
// --healthz-addr comes from AGENTD_HEALTHZ_ADDR, else FLANNELD_HEALTHZ_ADDR.
var EnvPrefixes = []string{"AGENTD_", "FLANNELD_"}

// DefaultIP is --healthz-ip's default, flanneld's: every address.
const DefaultIP = "0.0.0.0"

// Result is where the health server listens.
type Result struct {
	// Addr is the host:port agentd listens on; "" when the server is off.
	Addr string
	// From names the flag(s) or variable(s) Addr came from:
	// "--healthz-addr", "AGENTD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP and
	// AGENTD_HEALTHZ_PORT"; "" when Addr is.
	From string
	// Warnings name the settings given but not used, for agentd's log.
	Warnings []string
}

// setting is one flag's value and where it came from: rank 0 the command
// line, 1 AGENTD_, 2 FLANNELD_, unset none (from "", val the default).
type setting struct {
	val, from string
	rank      int
}

const unset = 3

// Resolve decides the health server's address as agentd does. given holds
// the flags of Flags given on the command line, by name, with their values
// as the flag set prints them; lookupEnv reads the environment, where each
// flag can be AGENTD_<FLAG> or FLANNELD_<FLAG> (HEALTHZ_ADDR, HEALTHZ_IP,
// HEALTHZ_PORT). Empty variables count as unset.
//
// Each flag takes its value from the best source that gives it: the
// command line, then AGENTD_, then FLANNELD_. Of the two forms,
// --healthz-addr and --healthz-ip with --healthz-port, only those from the
// best source that gives either are used: --healthz-port=9000 beats
// AGENTD_HEALTHZ_ADDR, AGENTD_HEALTHZ_PORT beats FLANNELD_HEALTHZ_ADDR.
// --healthz-ip alone chooses no form, since alone it serves nothing (port 0
// is off in flanneld), so it turns off no address from a worse source; it
// goes with the port of whichever source gives it. Within a form
// --healthz-addr wins (the port is then ignored, with a warning); a
// negative port is off, as in flanneld (with a warning); the IP may be an
// address or a host name, as flanneld's listener takes one. The error names
// the flag or variable at fault, in agentd's one-line form.
func Resolve(given map[string]string, lookupEnv func(string) (string, bool)) (Result, error) {
	get := func(flag string) setting {
		if v, ok := given[flag]; ok {
			return setting{v, "--" + flag, 0}
		}
		for i, p := range EnvPrefixes {
			name := p + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
			if v, ok := lookupEnv(name); ok && v != "" {
				return setting{v, name, i + 1}
			}
		}
		return setting{rank: unset}
	}
	addr, ip, port := get(AddrFlag), get(IPFlag), get(PortFlag)
	best := min(addr.rank, port.rank)
	if addr.rank > best {
		addr = setting{rank: unset}
	}
	if port.rank > best {
		port = setting{rank: unset}
		if ip.rank > 0 {
			ip = setting{rank: unset}
		}
	}
	where := func(s setting, flag string) string {
		if s.from != "" {
			return s.from
		}
		return "--" + flag
	}
	bad := func(from, value string, err error) error {
		return fmt.Errorf("invalid %s %q: %w", from, value, err)
	}

	var r Result
	if addr.val != "" {
		if err := agent.CheckListenAddr(addr.val); err != nil {
			return Result{}, bad(addr.from, addr.val, err)
		}
		r.Addr, r.From = addr.val, addr.from
		for _, s := range []setting{ip, port} {
			if s.from != "" {
				r.Warnings = append(r.Warnings, fmt.Sprintf("%s is ignored: %s is set", s.from, addr.from))
			}
		}
		return r, nil
	}
	var n int64
	if port.from != "" {
		// As the flag set parses an int flag, so that the command line and
		// the environment take the same spellings (0x2327, 011).
		var err error
		if n, err = strconv.ParseInt(port.val, 0, 64); err != nil {
			return Result{}, bad(port.from, port.val, err)
		}
	}
	switch {
	case n < 0:
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s is %d, so the health server is off, as in flanneld (0 says so plainly)", port.from, n))
	case n > 65535:
		return Result{}, bad(port.from, strconv.FormatInt(n, 10), errors.New("want a port from 1 to 65535, or 0 for off"))
	case n != 0:
		host, from := DefaultIP, port.from
		if ip.from != "" {
			host, from = ip.val, ip.from+" and "+port.from
		}
		if a, err := netip.ParseAddr(host); err == nil {
			host = a.String()
		} else if !agent.IsHostname(host) {
			return Result{}, bad(ip.from, ip.val, errors.New("neither an IP address nor a host name"))
		}
		r.Addr, r.From = net.JoinHostPort(host, strconv.FormatInt(n, 10)), from
	case ip.from != "":
		r.Warnings = append(r.Warnings, fmt.Sprintf("%s is ignored: %s is 0, so the health server is off (set --healthz-port, or --healthz-addr)", ip.from, where(port, PortFlag)))
	}
	return r, nil
}
