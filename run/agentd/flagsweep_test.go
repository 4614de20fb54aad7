package main

// Tests written for the mutation sweep of flags.go on 2026-12-07: each
// fails with one line of flags.go taken out or inverted that every other
// test of the package let pass.

import (
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

// TestParseArgsBacktraceFromEnv: klog's -log_backtrace_at comes from the
// environment like -v and -vmodule, with the same precedence (README: "so
// can the logging flags flanneld has, -v, -vmodule and -log_backtrace_at").
// Without it in loggingFromEnv, FLANNELD_LOG_BACKTRACE_AT was ignored and
// the other tests passed.
func TestParseArgsBacktraceFromEnv(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"FLANNELD_", nil, map[string]string{"FLANNELD_LOG_BACKTRACE_AT": "lease.go:10"}, "lease.go:10"},
		{"AGENTD_ over FLANNELD_", nil, map[string]string{"FLANNELD_LOG_BACKTRACE_AT": "lease.go:10", "AGENTD_LOG_BACKTRACE_AT": "agent.go:20"}, "agent.go:20"},
		{"command line over both", []string{"-log_backtrace_at=main.go:30"}, map[string]string{"AGENTD_LOG_BACKTRACE_AT": "agent.go:20"}, "main.go:30"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			logFlags, _, _ := testLogFlags()
			at := logFlags.String("log_backtrace_at", "", "file:line")
			if _, err := parseArgs(tt.args, envMap(tt.env), logFlags); err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			if *at != tt.want {
				t.Errorf("-log_backtrace_at=%q, want %q", *at, tt.want)
			}
		})
	}
}

// TestHelpHealthzDefaultsAsResolved: what --help gives as the health
// server's defaults is what agentd does without them: no --healthz-addr
// (the server is off), and --healthz-ip's default is the address that
// --healthz-port alone listens on. The server's address is decided by
// healthzaddr.Resolve, not by the flag set's defaults, so a default
// changed in the flag set alone changed --help and nothing else, and no
// test saw it.
func TestHelpHealthzDefaultsAsResolved(t *testing.T) {
	opts, err := parseArgs([]string{"--help"}, envMap(nil), nil)
	if err != nil || !opts.help {
		t.Fatalf("parseArgs(--help) = help %v, %v", opts.help, err)
	}
	line := func(flag string) string {
		for _, l := range strings.Split(opts.usage, "\n") {
			if strings.Contains(l, flag+" ") {
				return l
			}
		}
		t.Fatalf("--help has no line for %s:\n%s", flag, opts.usage)
		return ""
	}
	if l := line("--healthz-addr"); strings.Contains(l, "(default") {
		t.Errorf("--help gives --healthz-addr a default, but without it the server is off: %q", l)
	}
	m := regexp.MustCompile(`\(default "([^"]*)"\)`).FindStringSubmatch(line("--healthz-ip"))
	if m == nil {
		t.Fatalf("--help gives --healthz-ip no default: %q", line("--healthz-ip"))
	}

	off, err := parseArgs(nil, envMap(nil), nil)
	if err != nil || off.cfg.HealthzAddr != "" {
		t.Errorf("no health flag: health server at %q, %v; want off", off.cfg.HealthzAddr, err)
	}
	port, err := parseArgs([]string{"--healthz-port=8471"}, envMap(nil), nil)
	if want := net.JoinHostPort(m[1], "8471"); err != nil || port.cfg.HealthzAddr != want {
		t.Errorf("--healthz-port=8471: health server at %q, %v; want %q, as --help's default --healthz-ip says", port.cfg.HealthzAddr, err, want)
	}
}

// TestParseArgsTakesEdgeValues: settings that README gives as valid are
// taken, without a warning: --iptables-resync at both ends of 1 to 86400, a
// comma list with spaces in --iface (as in the environment), an empty
// --etcd-password on the command line (no password to warn about), an
// empty …_RELEASE_LEASE (an empty variable is unset), and empty entries in
// a repeatable flag's variable, skipped as empty variables are (an empty
// --iface-regex would match every interface). Each case fails with one
// line of flags.go changed that every other test let pass.
func TestParseArgsTakesEdgeValues(t *testing.T) {
	tests := []parseCase{
		{name: "iptables-resync 1", args: []string{"--iptables-resync=1"}, want: func(c *agent.Config) { c.IPTablesResync = time.Second }},
		{name: "iptables-resync 86400", args: []string{"--iptables-resync=86400"}, want: func(c *agent.Config) { c.IPTablesResync = 24 * time.Hour }},
		{name: "iface comma list with spaces", args: []string{"--iface=eth0, eth1", "--iface= 198.18.0.1"}, want: func(c *agent.Config) { c.Ifaces = []string{"eth0", "eth1", "198.18.0.1"} }},
		{name: "empty password on the command line", args: []string{"--etcd-password="}, want: func(*agent.Config) {}},
		{name: "empty release-lease variable", env: map[string]string{"AGENTD_RELEASE_LEASE": "", "FLANNELD_RELEASE_LEASE": ""}, want: func(*agent.Config) {}},
		{name: "empty entries in an iface list variable", env: map[string]string{"AGENTD_IFACE": "eth0,, ,eth1,"}, want: func(c *agent.Config) { c.Ifaces = []string{"eth0", "eth1"} }},
		{
			name:    "empty entries in an iface-regex list variable",
			env:     map[string]string{"FLANNELD_IFACE_REGEX": ",^en,(a|b) ,"},
			want:    func(*agent.Config) {},
			regexes: []string{"^en", "(a|b)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkParsed(t, tt.args, tt.env, tt.want, tt.regexes, tt.warn)
		})
	}
}

// TestParseArgsRefusesBadValues: an --iface-can-reach that is no address is
// refused, naming it (without that check it is taken as unset, and agentd
// picks the default route's interface); and of several invalid variables
// the error names the first in --help's order, as parsing stops there.
func TestParseArgsRefusesBadValues(t *testing.T) {
	// Only agentd's part of the message is written here (what was
	// refused: the flag or variable, and the value); the cause after it is
	// the error Go's own parser gives for the value, asked at run time, so
	// that a Go release that rewords netip's or strconv's text changes
	// nothing here.
	_, notAddr := netip.ParseAddr("etcd1")
	_, tooShort := netip.ParseAddr("198.18.0")
	_, notBool := strconv.ParseBool("maybe")
	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		prefix string
		cause  error
	}{
		{"iface-can-reach not an address", []string{"--iface-can-reach=etcd1"}, nil, `invalid --iface-can-reach "etcd1": `, notAddr},
		{"iface-can-reach from the environment", nil, map[string]string{"FLANNELD_IFACE_CAN_REACH": "198.18.0"}, `invalid FLANNELD_IFACE_CAN_REACH "198.18.0": `, tooShort},
		{"two invalid variables", nil, map[string]string{"FLANNELD_IP_MASQ": "maybe", "AGENTD_RESYNC_INTERVAL": "soon"}, `invalid FLANNELD_IP_MASQ "maybe": `, notBool},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.cause == nil {
				t.Fatal("Go's parser took the value: the case tests nothing")
			}
			logFlags, _, _ := testLogFlags()
			_, err := parseArgs(tt.args, envMap(tt.env), logFlags)
			if want := tt.prefix + tt.cause.Error(); err == nil || err.Error() != want {
				t.Errorf("parseArgs(%q, %v) error:\n got %v\nwant %s", tt.args, tt.env, err, want)
			}
		})
	}
}
