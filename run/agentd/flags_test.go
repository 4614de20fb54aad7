package main

import (
	"bytes"
	goflag "flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/internal/longflags"
	"k8s.io/klog/v2"
)

// testLogFlags stands in for klog's flags, so that tests do not change
// klog's global state: a one-letter -v and a long -vmodule.
func testLogFlags() (*goflag.FlagSet, *int, *string) {
	fs := goflag.NewFlagSet("log", goflag.ContinueOnError)
	v := fs.Int("v", 0, "verbosity")
	vmodule := fs.String("vmodule", "", "per-file verbosity")
	return fs, v, vmodule
}

func envMap(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// regexStrings takes the regexes out of c (they do not compare with
// reflect.DeepEqual) and returns them as their sources.
func regexStrings(c *agent.Config) []string {
	var s []string
	for _, re := range c.IfaceRegexes {
		s = append(s, re.String())
	}
	c.IfaceRegexes = nil
	return s
}

// parseCase is a command line and environment, and what parseArgs must make
// of them (see checkParsed).
type parseCase struct {
	name string
	args []string
	env  map[string]string
	// want edits agent.DefaultConfig into the expected Config.
	want    func(c *agent.Config)
	regexes []string
	warn    string // a substring of a warning, if one is expected
	v       int    // the -v level expected
}

func TestParseArgs(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	cert := filepath.Join(dir, "cert.pem")
	key := filepath.Join(dir, "key.pem")
	for _, f := range []string{ca, cert, key} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	tests := []parseCase{
		{name: "defaults", want: func(*agent.Config) {}},
		{
			name: "flanneld single-dash style",
			args: []string{"-etcd-endpoints=https://198.18.0.254:2379,https://etcd.example:2379", "-etcd-prefix", "/example.com/net",
				"-iface", "eth0", "-iface=198.18.0.1", "-ip-masq", "-subnet-file=/run/x/subnet.env", "-public-ip", "198.18.9.9"},
			want: func(c *agent.Config) {
				c.EtcdEndpoints = []string{"https://198.18.0.254:2379", "https://etcd.example:2379"}
				c.EtcdPrefix = "/example.com/net"
				c.Ifaces = []string{"eth0", "198.18.0.1"}
				c.IPMasq = true
				c.SubnetFile = "/run/x/subnet.env"
				c.PublicIP = netip.MustParseAddr("198.18.9.9")
			},
		},
		{
			name: "double dash, repeatable and comma lists",
			args: []string{"--iface=eth1,eth2", "--iface", "eth3", "--iface-regex", "^en", "--iface-regex=^(eth|en)[0-9]{1,2}$",
				"--iptables-forward-rules=false", "--release-lease", "--etcd-endpoints", " http://a:1 , unix:///run/etcd.sock "},
			want: func(c *agent.Config) {
				c.Ifaces = []string{"eth1", "eth2", "eth3"}
				c.IPTablesForwardRules = false
				c.ReleaseLease = true
				c.EtcdEndpoints = []string{"http://a:1", "unix:///run/etcd.sock"}
			},
			regexes: []string{"^en", "^(eth|en)[0-9]{1,2}$"},
		},
		{
			// The etcd client's (and gRPC's) form without "//", which
			// flanneld takes through the same client.
			name: "socket endpoints written unix:path",
			env:  map[string]string{"FLANNELD_ETCD_ENDPOINTS": "unix:/run/etcd.sock,unix:etcd2.sock"},
			want: func(c *agent.Config) { c.EtcdEndpoints = []string{"unix:/run/etcd.sock", "unix:etcd2.sock"} },
		},
		{
			// flanneld (through the etcd client) takes an endpoint without
			// a scheme, as etcdctl writes them: in plaintext, or over TLS
			// with TLS files.
			name: "endpoints written host:port",
			args: []string{"-etcd-endpoints=198.18.0.254:2379,etcd.example:2379,[fd00::1]:2379"},
			want: func(c *agent.Config) {
				c.EtcdEndpoints = []string{"198.18.0.254:2379", "etcd.example:2379", "[fd00::1]:2379"}
			},
		},
		{
			name: "endpoint written host:port from the environment, with a CA file",
			args: []string{"--etcd-cafile=" + ca},
			env:  map[string]string{"FLANNELD_ETCD_ENDPOINTS": "etcd:2379"},
			want: func(c *agent.Config) {
				c.EtcdCAFile = ca
				c.EtcdEndpoints = []string{"etcd:2379"}
			},
		},
		{
			// flanneld v0.28.10 runs with a comma too many in the list (a
			// templated unit's empty variable): the empty entry is
			// skipped, with a warning.
			name: "empty entries in the endpoint list",
			args: []string{"-etcd-endpoints=http://198.18.0.254:2379,"},
			want: func(c *agent.Config) { c.EtcdEndpoints = []string{"http://198.18.0.254:2379"} },
			warn: "--etcd-endpoints has 1 empty entry (a comma too many); it is ignored, as in flanneld",
		},
		{
			name: "empty entries in the endpoint list from the environment",
			env:  map[string]string{"FLANNELD_ETCD_ENDPOINTS": "http://198.18.0.254:2379, ,http://198.18.0.253:2379,"},
			want: func(c *agent.Config) {
				c.EtcdEndpoints = []string{"http://198.18.0.254:2379", "http://198.18.0.253:2379"}
			},
			warn: "FLANNELD_ETCD_ENDPOINTS has 2 empty entries (a comma too many); they are ignored, as in flanneld",
		},
		{
			// A socket's path has no user information: its '@' stays.
			name: "socket paths holding @",
			args: []string{"--etcd-endpoints=unix:///run/etcd@1.sock,unix:/run/etcd@2.sock"},
			want: func(c *agent.Config) { c.EtcdEndpoints = []string{"unix:///run/etcd@1.sock", "unix:/run/etcd@2.sock"} },
		},
		{
			name: "unixs:path and unix:path with a CA file",
			args: []string{"--etcd-cafile=" + ca, "--etcd-endpoints=unixs:/run/etcd.sock,unix:/run/etcd2.sock"},
			want: func(c *agent.Config) {
				c.EtcdCAFile = ca
				c.EtcdEndpoints = []string{"unixs:/run/etcd.sock", "unix:/run/etcd2.sock"}
			},
		},
		{
			name: "values starting with a dash",
			args: []string{"-etcd-username", "-u-", "-etcd-password", "-secret", "--etcd-prefix", "/-x"},
			want: func(c *agent.Config) {
				c.EtcdUsername = "-u-"
				c.EtcdPassword = "-secret"
				c.EtcdPrefix = "/-x"
			},
			warn: passwordOnCommandLine,
		},
		{
			name: "password from the environment",
			env:  map[string]string{"AGENTD_ETCD_PASSWORD": "secret", "AGENTD_ETCD_USERNAME": "u"},
			want: func(c *agent.Config) {
				c.EtcdUsername = "u"
				c.EtcdPassword = "secret"
			},
		},
		{name: "klog -v=2", args: []string{"-v=2", "-iface", "eth0"}, want: func(c *agent.Config) { c.Ifaces = []string{"eth0"} }, v: 2},
		{name: "klog -v 3", args: []string{"-v", "3"}, want: func(*agent.Config) {}, v: 3},
		{name: "klog -v4", args: []string{"-v4"}, want: func(*agent.Config) {}, v: 4},
		{name: "klog --v=5", args: []string{"--v=5"}, want: func(*agent.Config) {}, v: 5},
		{name: "klog -vmodule", args: []string{"-vmodule=agent*=4", "-v=1"}, want: func(*agent.Config) {}, v: 1},
		{
			name: "durations and TLS",
			args: []string{"--subnet-lease-ttl=5s", "-resync-interval=2s", "-iptables-resync", "10", "--etcd-cafile=" + ca, "--etcd-certfile", cert, "--etcd-keyfile", key, "--state-dir=/tmp/agentd-state"},
			want: func(c *agent.Config) {
				c.SubnetLeaseTTL = 5 * time.Second
				c.ResyncInterval = 2 * time.Second
				c.IPTablesResync = 10 * time.Second
				c.EtcdCAFile, c.EtcdCertFile, c.EtcdKeyFile = ca, cert, key
				c.StateDir = "/tmp/agentd-state"
			},
		},
		{
			// They are read at run time: they may be written after boot.
			name: "TLS files that do not exist yet",
			env:  map[string]string{"FLANNELD_ETCD_CAFILE": dir + "/later/ca.pem", "FLANNELD_ETCD_CERTFILE": dir + "/later/cert.pem", "FLANNELD_ETCD_KEYFILE": dir},
			want: func(c *agent.Config) {
				c.EtcdCAFile, c.EtcdCertFile, c.EtcdKeyFile = dir+"/later/ca.pem", dir+"/later/cert.pem", dir
			},
		},
		{name: "IPv4-mapped public ip", args: []string{"--public-ip=::ffff:198.18.0.7"}, want: func(c *agent.Config) { c.PublicIP = netip.MustParseAddr("198.18.0.7") }},
		{name: "iface-can-reach", args: []string{"--iface-can-reach=198.18.0.254"}, want: func(c *agent.Config) { c.IfaceCanReach = netip.MustParseAddr("198.18.0.254") }},
		{name: "iptables mode", args: []string{"--iptables-mode=auto"}, want: func(c *agent.Config) { c.IPTablesMode = "auto" }},
		{name: "docker accept fwmark", args: []string{"--docker-accept-fwmark=0x200000/0x200000"}, want: func(c *agent.Config) {
			c.DockerAcceptFwMark = iptables.Mark{Value: 0x200000, Mask: 0x200000}
		}},
		{name: "docker accept fwmark from the environment", env: map[string]string{"AGENTD_DOCKER_ACCEPT_FWMARK": "2/3"}, want: func(c *agent.Config) {
			c.DockerAcceptFwMark = iptables.Mark{Value: 2, Mask: 3}
		}},
		{name: "endpoint checks off", args: []string{"--etcd-endpoint-check-interval=0"}, want: func(c *agent.Config) { c.EtcdEndpointCheckInterval = 0 }},
		{name: "endpoint checks every 5s", args: []string{"--etcd-endpoint-check-interval=5s"}, want: func(c *agent.Config) { c.EtcdEndpointCheckInterval = 5 * time.Second }},
		{name: "healthz port", args: []string{"--healthz-port=8471"}, want: func(c *agent.Config) { c.HealthzAddr = "0.0.0.0:8471" }},
		{name: "healthz ip and port", args: []string{"-healthz-ip=127.0.0.1", "-healthz-port=8471"}, want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.1:8471" }},
		{name: "healthz ipv6", args: []string{"--healthz-ip=::1", "--healthz-port=8471"}, want: func(c *agent.Config) { c.HealthzAddr = "[::1]:8471" }},
		// flanneld listens on --healthz-ip:--healthz-port as given, so a
		// host name works there, and a port below 1 serves nothing.
		{name: "healthz host name", env: map[string]string{"FLANNELD_HEALTHZ_IP": "localhost", "FLANNELD_HEALTHZ_PORT": "8471"}, want: func(c *agent.Config) { c.HealthzAddr = "localhost:8471" }},
		{
			name: "negative healthz port",
			args: []string{"--healthz-port=-1"},
			want: func(*agent.Config) {},
			warn: "--healthz-port is -1, so the health server is off, as in flanneld",
		},
		{
			name: "healthz addr wins",
			args: []string{"--healthz-addr=127.0.0.1:9000", "--healthz-port=8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.1:9000" },
			warn: "--healthz-port is ignored: --healthz-addr is set",
		},
		{
			name: "renew margin accepted and ignored",
			args: []string{"-subnet-lease-renew-margin=30"},
			want: func(*agent.Config) {},
			warn: "--subnet-lease-renew-margin is deprecated and ignored",
		},
		{
			name: "flannel environment",
			env: map[string]string{
				"FLANNELD_ETCD_ENDPOINTS": "http://198.18.0.254:2379",
				"FLANNELD_IFACE":          "eth0, eth1",
				"FLANNELD_IFACE_REGEX":    "^(eth|en)[0-9]{1,2}$,^bond[0-9]",
				"FLANNELD_PUBLIC_IP":      "198.18.0.1",
				"FLANNELD_IP_MASQ":        "true",
				"FLANNELD_HEALTHZ_PORT":   "8471",
				"FLANNELD_ETCD_PREFIX":    "", // empty: unset
				"FLANNELD_RELEASE_LEASE":  "true",
				"FLANNELD_VERSION":        "true",
			},
			want: func(c *agent.Config) {
				c.EtcdEndpoints = []string{"http://198.18.0.254:2379"}
				c.Ifaces = []string{"eth0", "eth1"}
				c.PublicIP = netip.MustParseAddr("198.18.0.1")
				c.IPMasq = true
				c.HealthzAddr = "0.0.0.0:8471"
			},
			regexes: []string{"^(eth|en)[0-9]{1,2}$", "^bond[0-9]"},
			// An operator who puts the action in the environment is told
			// that it did nothing, rather than have the agent start quietly.
			warn: "FLANNELD_RELEASE_LEASE is ignored: --release-lease is an action, taken from the command line only",
		},
		{
			name: "release-lease on the command line, the environment's not warned about",
			args: []string{"--release-lease"},
			env:  map[string]string{"AGENTD_RELEASE_LEASE": "true"},
			want: func(c *agent.Config) { c.ReleaseLease = true },
		},
		{
			name: "command line over AGENTD_ over FLANNELD_",
			args: []string{"--iface=eth9"},
			env: map[string]string{
				"FLANNELD_IFACE":            "eth0",
				"AGENTD_IFACE":              "eth1",
				"FLANNELD_SUBNET_LEASE_TTL": "1h",
				"AGENTD_SUBNET_LEASE_TTL":   "2h",
				"FLANNELD_STATE_DIR":        "/var/lib/f",
				"FLANNELD_IPTABLES_RESYNC":  "7",
			},
			want: func(c *agent.Config) {
				c.Ifaces = []string{"eth9"}
				c.SubnetLeaseTTL = 2 * time.Hour
				c.StateDir = "/var/lib/f"
				c.IPTablesResync = 7 * time.Second
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if v := checkParsed(t, tt.args, tt.env, tt.want, tt.regexes, tt.warn); v != tt.v {
				t.Errorf("-v = %d, want %d", v, tt.v)
			}
		})
	}
}

// checkParsed parses args with env and checks the Config (wantEdit edits
// agent.DefaultConfig into it), the interface regexes and the warnings
// (warn: a substring of one, or "" for none); it returns the -v level set.
func checkParsed(t *testing.T, args []string, env map[string]string, wantEdit func(*agent.Config), regexes []string, warn string) int {
	t.Helper()
	logFlags, v, _ := testLogFlags()
	opts, err := parseArgs(args, envMap(env), logFlags)
	if err != nil {
		t.Fatalf("parseArgs: %v", err)
	}
	want := agent.DefaultConfig()
	wantEdit(&want)
	got := opts.cfg
	if gotRe := regexStrings(&got); !reflect.DeepEqual(gotRe, regexes) {
		t.Errorf("regexes = %q, want %q", gotRe, regexes)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("config:\n got %+v\nwant %+v", got, want)
	}
	warnings := strings.Join(opts.warnings, "\n")
	if warn == "" && warnings != "" || !strings.Contains(warnings, warn) {
		t.Errorf("warnings = %q, want one containing %q", warnings, warn)
	}
	return *v
}

func TestParseArgsErrors(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(cert, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string // the whole error
	}{
		{"unknown flag", []string{"--no-such-flag"}, nil, "unknown flag: --no-such-flag"},
		{"unknown single-dash flag", []string{"-bogus=1"}, nil, "unknown flag: --bogus"},
		{"missing value", []string{"--iface"}, nil, "flag needs an argument: --iface"},
		{"bad duration", []string{"--subnet-lease-ttl=abc"}, nil, `invalid --subnet-lease-ttl "abc": time: invalid duration "abc"`},
		{"plain number ttl", []string{"-subnet-lease-ttl", "5"}, nil, `invalid --subnet-lease-ttl "5": time: missing unit in duration "5"`},
		{"ttl below a second", []string{"--subnet-lease-ttl=500ms"}, nil, `invalid --subnet-lease-ttl "500ms": must be at least 1s`},
		{"ttl fractional seconds", []string{"--subnet-lease-ttl=1500ms"}, nil, `invalid --subnet-lease-ttl "1.5s": etcd lease TTLs are whole seconds`},
		{"resync zero", []string{"--resync-interval=0s"}, nil, `invalid --resync-interval "0s": must be at least 1s`},
		{"iptables resync zero", []string{"--iptables-resync=0"}, nil, `invalid --iptables-resync "0": must be at least 1 (seconds)`},
		// 3*resync + 1m, the health server's heartbeat limit, went
		// negative for a resync of a million hours, and /healthz stopped
		// watching the reconcile loop.
		{"resync beyond a day", []string{"--resync-interval=1000000h"}, nil, `invalid --resync-interval "1000000h0m0s": must be at most 24h0m0s`},
		// Seconds times 1e9 wrapped: 18446744075 s became about 1.29 s.
		{"iptables resync wraps", []string{"--iptables-resync=18446744075"}, nil, `invalid --iptables-resync "18446744075": must be at most 86400 (seconds)`},
		{"iptables resync beyond a day", []string{"--iptables-resync=86401"}, nil, `invalid --iptables-resync "86401": must be at most 86400 (seconds)`},
		// Negative seconds wrapped too: -18446744072 s became about 1.7 s,
		// and agentd ran with it.
		{"iptables resync wraps below zero", []string{"--iptables-resync=-18446744072"}, nil, `invalid --iptables-resync "-18446744072": must be at least 1 (seconds)`},
		{"iptables resync wraps below zero from env", nil, map[string]string{"FLANNELD_IPTABLES_RESYNC": "-18446744072"}, `invalid FLANNELD_IPTABLES_RESYNC "-18446744072": must be at least 1 (seconds)`},
		{"bad public ip", []string{"--public-ip", "x"}, nil, `invalid --public-ip "x": ParseAddr("x"): unable to parse IP`},
		{"ipv6 public ip", []string{"--public-ip=2001:db8::1"}, nil, `invalid --public-ip "2001:db8::1": the underlay is IPv4; want an IPv4 address`},
		{"multicast public ip", []string{"--public-ip=224.0.0.1"}, nil, `invalid --public-ip "224.0.0.1": peers cannot send to a loopback, multicast or broadcast address`},
		{"bad can-reach", []string{"--iface-can-reach=0.0.0.0"}, nil, `invalid --iface-can-reach "0.0.0.0": unspecified address`},
		{"bad regex", []string{"--iface-regex=(eth"}, nil, "invalid --iface-regex \"(eth\": error parsing regexp: missing closing ): `(eth`"},
		{"bad iface name", []string{"--iface=eth0/1"}, nil, `invalid --iface "eth0/1": not an interface name or an IP address`},
		{"empty iface", []string{"--iface=eth0,"}, nil, `invalid --iface "": empty interface name`},
		{"long iface", []string{"--iface=abcdefghijklmnop"}, nil, `invalid --iface "abcdefghijklmnop": interface names are at most 15 bytes`},
		{"empty endpoints", []string{"--etcd-endpoints="}, nil, `invalid --etcd-endpoints "": no etcd endpoint given`},
		{"only commas in the endpoint list", []string{"--etcd-endpoints= , "}, nil, `invalid --etcd-endpoints "": no etcd endpoint given`},
		{"endpoint without scheme or port", []string{"--etcd-endpoints=198.18.0.254"}, nil, `invalid --etcd-endpoints "198.18.0.254": no scheme and no port; want host:port or a URL, such as 198.18.0.254:2379 or http://198.18.0.254:2379`},
		{"endpoint host:port with a bad port", []string{"--etcd-endpoints=etcd:http"}, nil, `invalid --etcd-endpoints "etcd:http": port "http": want a number from 0 to 65535`},
		{"endpoint host:port with a bad host", []string{"--etcd-endpoints=et cd:2379"}, nil, `invalid --etcd-endpoints "et cd:2379": "et cd" is neither an IP address nor a host name`},
		{"endpoint host:port without a host", []string{"--etcd-endpoints=:2379"}, nil, `invalid --etcd-endpoints ":2379": no host`},
		{"endpoint IPv6 host:port without brackets", []string{"--etcd-endpoints=fd00::1:2379"}, nil, `invalid --etcd-endpoints "fd00::1:2379": neither a URL nor host:port: address fd00::1:2379: too many colons in address`},
		{"host:port after http, with a CA file", []string{"--etcd-cafile=" + cert, "--etcd-endpoints=http://a:1,b:2"}, nil, `invalid --etcd-endpoints "http://a:1,b:2": the etcd client reaches every endpoint as it reaches the first, so b:2 would be reached in plaintext like http://a:1; give all endpoints the same scheme`},
		{"endpoint bad scheme", []string{"--etcd-endpoints=http://a:1,ftp://b"}, nil, `invalid --etcd-endpoints "ftp://b": scheme "ftp" not supported, want http, https, unix or unixs`},
		{"https after http", []string{"--etcd-endpoints=http://198.18.0.254:2379,https://198.18.0.253:2379"}, nil,
			`invalid --etcd-endpoints "http://198.18.0.254:2379,https://198.18.0.253:2379": the etcd client reaches every endpoint as it reaches the first, so https://198.18.0.253:2379 would be reached in plaintext like http://198.18.0.254:2379; give all endpoints the same scheme`},
		{"http after https", []string{"--etcd-endpoints=https://198.18.0.254:2379,https://198.18.0.253:2379,http://198.18.0.252:2379"}, nil,
			`invalid --etcd-endpoints "https://198.18.0.254:2379,https://198.18.0.253:2379,http://198.18.0.252:2379": the etcd client reaches every endpoint as it reaches the first, so http://198.18.0.252:2379 would be reached over TLS like https://198.18.0.254:2379; give all endpoints the same scheme`},
		{"unix after https without TLS files", []string{"--etcd-endpoints=https://198.18.0.254:2379,unix:///run/etcd.sock"}, nil,
			`invalid --etcd-endpoints "https://198.18.0.254:2379,unix:///run/etcd.sock": the etcd client reaches every endpoint as it reaches the first, so unix:///run/etcd.sock would be reached over TLS like https://198.18.0.254:2379; give all endpoints the same scheme`},
		{"http after unix with a CA file", []string{"--etcd-cafile=" + cert, "--etcd-endpoints=unix:///run/etcd.sock,http://198.18.0.254:2379"}, nil,
			`invalid --etcd-endpoints "unix:///run/etcd.sock,http://198.18.0.254:2379": the etcd client reaches every endpoint as it reaches the first, so http://198.18.0.254:2379 would be reached over TLS like unix:///run/etcd.sock; give all endpoints the same scheme`},
		{"unix: without a path", []string{"--etcd-endpoints=unix:"}, nil, `invalid --etcd-endpoints "unix:": no socket path after unix:`},
		{"unixs:path after unix:path without TLS files", []string{"--etcd-endpoints=unix:/run/etcd.sock,unixs:/run/etcd2.sock"}, nil,
			`invalid --etcd-endpoints "unix:/run/etcd.sock,unixs:/run/etcd2.sock": the etcd client reaches every endpoint as it reaches the first, so unixs:/run/etcd2.sock would be reached in plaintext like unix:/run/etcd.sock; give all endpoints the same scheme`},
		{"upper-case unixs", []string{"--etcd-endpoints=UNIXS:///run/etcd.sock"}, nil,
			`invalid --etcd-endpoints "UNIXS:///run/etcd.sock": write the scheme in lower case (unixs://): the etcd client does not take UNIXS:// for a socket`},
		{"capitalised unix", []string{"--etcd-endpoints=Unix:///run/etcd.sock"}, nil,
			`invalid --etcd-endpoints "Unix:///run/etcd.sock": write the scheme in lower case (unix://): the etcd client does not take Unix:// for a socket`},
		{"https without a port", []string{"--etcd-endpoints=https://etcd.example.com"}, nil,
			`invalid --etcd-endpoints "https://etcd.example.com": no port, and the etcd client dials none by default; etcd's client port is usually 2379: write https://etcd.example.com:2379`},
		{"IPv6 without a port", []string{"--etcd-endpoints=http://198.18.0.254:2379,http://[fd00::1]/"}, nil,
			`invalid --etcd-endpoints "http://[fd00::1]/": no port, and the etcd client dials none by default; etcd's client port is usually 2379: write http://[fd00::1]:2379`},
		{"empty port", []string{"--etcd-endpoints=http://198.18.0.254:"}, nil,
			`invalid --etcd-endpoints "http://198.18.0.254:": no port, and the etcd client dials none by default; etcd's client port is usually 2379: write http://198.18.0.254:2379`},
		// No password in the message: it goes to the journal.
		{"endpoint with credentials", []string{"--etcd-endpoints=http://u:secret@a:1"}, nil, `invalid --etcd-endpoints "http://xxxxx@a:1": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"endpoint with credentials and a path", []string{"--etcd-endpoints=https://u:secret@a:1/x@y"}, nil, `invalid --etcd-endpoints "https://xxxxx@y": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"endpoint with credentials and a bad port", []string{"--etcd-endpoints=http://u:secret@a:x"}, nil, `invalid --etcd-endpoints "http://xxxxx@a:x": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"endpoint with credentials and no port", []string{"--etcd-endpoints=http://u:secret@a"}, nil, `invalid --etcd-endpoints "http://xxxxx@a": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"endpoint with credentials and no scheme", []string{"--etcd-endpoints=u:secret@a:2379"}, nil, `invalid --etcd-endpoints "xxxxx@a:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		// A password may hold '/', '?' or '#' (base64 holds '/'), which
		// url.Parse takes for the end of the host.
		{"password with a slash", []string{"--etcd-endpoints=http://root:aB3/xY+z@etcd:2379"}, nil, `invalid --etcd-endpoints "http://xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"password with a slash after digits", []string{"--etcd-endpoints=http://root:123/xyz@etcd:2379"}, nil, `invalid --etcd-endpoints "http://xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"password with ? and #", []string{"--etcd-endpoints=https://root:a?b#c@etcd:2379"}, nil, `invalid --etcd-endpoints "https://xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"password with a slash, no scheme", []string{"--etcd-endpoints=root:aB/3@etcd:2379"}, nil, `invalid --etcd-endpoints "xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"password with a bad escape", []string{"--etcd-endpoints=http://root:a%zzb@etcd:2379"}, nil, `invalid --etcd-endpoints "http://xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"credentials and an IPv6 host", []string{"--etcd-endpoints=http://u:p/w@[fd00::1]:2379"}, nil, `invalid --etcd-endpoints "http://xxxxx@[fd00::1]:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"credentials in a socket URL", []string{"--etcd-endpoints=unix://u:secret@/run/etcd.sock"}, nil, `invalid --etcd-endpoints "unix://xxxxx@/run/etcd.sock": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"FLANNELD endpoint with a slash in the password", nil, map[string]string{"FLANNELD_ETCD_ENDPOINTS": "http://198.18.0.254:2379,https://root:s3/cr?t@etcd:2379"}, `invalid FLANNELD_ETCD_ENDPOINTS "https://xxxxx@etcd:2379": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"env endpoint with credentials", nil, map[string]string{"AGENTD_ETCD_ENDPOINTS": "http://u:secret@a:1"}, `invalid AGENTD_ETCD_ENDPOINTS "http://xxxxx@a:1": credentials in the URL are not used; use --etcd-username and --etcd-password`},
		{"bad prefix", []string{"--etcd-prefix=coreos.com/network"}, nil, `invalid --etcd-prefix "coreos.com/network": must start with /`},
		{"certfile without keyfile", []string{"--etcd-certfile=" + cert}, nil, `invalid --etcd-keyfile "": required when --etcd-certfile is set`},
		{"missing certfile without keyfile", []string{"--etcd-certfile=" + dir + "/nope.pem"}, nil, `invalid --etcd-keyfile "": required when --etcd-certfile is set`},
		{"keyfile without certfile", []string{"--etcd-keyfile=" + cert}, nil, `invalid --etcd-certfile "": required when --etcd-keyfile is set`},
		{"password without user", []string{"--etcd-password=x"}, nil, `invalid --etcd-username "": required when --etcd-password is set`},
		{"relative subnet file", []string{"--subnet-file=subnet.env"}, nil, `invalid --subnet-file "subnet.env": want an absolute path`},
		{"relative state dir", []string{"--state-dir=state"}, nil, `invalid --state-dir "state": want an absolute path`},
		{"endpoint checks too often", []string{"--etcd-endpoint-check-interval=10ms"}, nil, `invalid --etcd-endpoint-check-interval "10ms": must be at least 1s, or 0 to turn the checks off`},
		{"bad iptables mode", []string{"--iptables-mode=nf_tables"}, nil, `invalid --iptables-mode "nf_tables": want nft, legacy, auto, or empty for the backend of the iptables command`},
		{"docker fwmark not a number", []string{"--docker-accept-fwmark=mark"}, nil, `invalid --docker-accept-fwmark "mark": mark "mark" is not a 32-bit number (decimal, or hexadecimal with 0x)`},
		{"docker fwmark outside its mask", nil, map[string]string{"AGENTD_DOCKER_ACCEPT_FWMARK": "0x3/0x1"}, `invalid AGENTD_DOCKER_ACCEPT_FWMARK "0x3/0x1": mark 0x3 has bits outside mask 0x1, so no packet could match it`},
		{"docker fwmark without a mask", []string{"--docker-accept-fwmark=1"}, nil, `invalid --docker-accept-fwmark "1": mask 0xffffffff covers 0x4000, kube-proxy's masquerade bit, which agentd would then overwrite; pick bits no other software uses, e.g. 0x200000/0x200000, and give dockerd the same (without a mask, the mask is 0xffffffff, the whole mark)`},
		{"bad healthz addr", []string{"--healthz-addr=8471"}, nil, `invalid --healthz-addr "8471": address 8471: missing port in address`},
		{"bad healthz port", []string{"--healthz-port=70000"}, nil, `invalid --healthz-port "70000": want a port from 1 to 65535, or 0 for off`},
		{"bad healthz ip", []string{"--healthz-port=1", "--healthz-ip=local_host"}, nil, `invalid --healthz-ip "local_host": neither an IP address nor a host name`},
		{"positional argument", []string{"eth0"}, nil, `unexpected argument "eth0"`},
		{"bool value after space", []string{"--ip-masq", "false"}, nil, `unexpected argument "false" (give a boolean flag's value after '=', as in --ip-masq=false)`},
		{"after terminator", []string{"--", "-iface"}, nil, `unexpected argument "-iface"`},
		{"bad env bool", nil, map[string]string{"FLANNELD_IP_MASQ": "maybe"}, `invalid FLANNELD_IP_MASQ "maybe": strconv.ParseBool: parsing "maybe": invalid syntax`},
		{"bad env ip", nil, map[string]string{"FLANNELD_PUBLIC_IP": "1.2.3"}, `invalid FLANNELD_PUBLIC_IP "1.2.3": ParseAddr("1.2.3"): IPv4 address too short`},
		{"bad env duration", nil, map[string]string{"AGENTD_RESYNC_INTERVAL": "soon"}, `invalid AGENTD_RESYNC_INTERVAL "soon": time: invalid duration "soon"`},
		{"env keyfile without certfile", nil, map[string]string{"FLANNELD_ETCD_KEYFILE": "/nonexistent/key.pem"}, `invalid --etcd-certfile "": required when --etcd-keyfile is set`},
		{"env endpoints", nil, map[string]string{"FLANNELD_ETCD_ENDPOINTS": "etcd"}, `invalid FLANNELD_ETCD_ENDPOINTS "etcd": no scheme and no port; want host:port or a URL, such as etcd:2379 or http://etcd:2379`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logFlags, _, _ := testLogFlags()
			_, err := parseArgs(tt.args, envMap(tt.env), logFlags)
			if err == nil {
				t.Fatalf("parseArgs(%q) succeeded, want error %q", tt.args, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error:\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestParseArgsActions(t *testing.T) {
	badEnv := envMap(map[string]string{"FLANNELD_PUBLIC_IP": "bad"})
	for _, args := range [][]string{{"--help"}, {"-help"}, {"-h"}, {"--iface=eth0", "--help"}} {
		opts, err := parseArgs(args, badEnv, nil)
		if err != nil || !opts.help {
			t.Errorf("parseArgs(%q) = help %v, %v; want help", args, opts.help, err)
		}
		if !strings.HasPrefix(opts.usage, "Usage: agentd") {
			t.Errorf("usage text starts %q", opts.usage[:min(40, len(opts.usage))])
		}
	}
	for _, args := range [][]string{{"--version"}, {"-version"}} {
		opts, err := parseArgs(args, badEnv, nil)
		if err != nil || !opts.version {
			t.Errorf("parseArgs(%q) = version %v, %v; want version", args, opts.version, err)
		}
	}
}

func TestNormalizeArgs(t *testing.T) {
	logFlags, _, _ := testLogFlags()
	var v flagValues
	fs := newFlagSet(&v)
	fs.AddGoFlagSet(logFlags)
	tests := []struct{ in, want string }{
		{"-iface eth0", "--iface eth0"},
		{"-iface=eth0 -ip-masq -v=2", "--iface=eth0 --ip-masq -v=2"},
		{"-v 2 -v2 -h", "-v 2 -v2 -h"},
		{"-etcd-password -x -iface -y", "--etcd-password -x --iface -y"},
		{"--etcd-password -x", "--etcd-password -x"},
		{"-vmodule x=1", "--vmodule x=1"},
		{"- -- -iface x", "- -- -iface x"},
		{"-unknown -iface", "--unknown --iface"},
		{"-ip-masq -v", "--ip-masq -v"},
	}
	for _, tt := range tests {
		got := strings.Join(longflags.Normalize(fs, strings.Fields(tt.in)), " ")
		if got != tt.want {
			t.Errorf("longflags.Normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestSplitTopLevel(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"a,b", []string{"a", "b"}},
		{"^(eth|en)[0-9]{1,2}$,^bond", []string{"^(eth|en)[0-9]{1,2}$", "^bond"}},
		{`a\,b,c`, []string{`a\,b`, "c"}},
		{"[,],x", []string{"[,]", "x"}},
		{"[]],]", []string{"[]]", "]"}},     // an unbalanced close is literal text
		{"x{2,},y", []string{"x{2,}", "y"}}, // a count without an upper bound
		{"a),b", []string{"a)", "b"}},       // an unbalanced ")" stays in its part, which regexp refuses
		{"", []string{""}},
	}
	for _, tt := range tests {
		if got := splitTopLevel(tt.in, ","); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("splitTopLevel(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestRunExitCodes(t *testing.T) {
	noEnv := envMap(nil)
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, noEnv, &out, &errOut); code != 0 || out.String() != "agentd dev\n" {
		t.Errorf("--version: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, noEnv, &out, &errOut); code != 0 || !strings.Contains(out.String(), "--etcd-endpoints") || !strings.Contains(out.String(), "Logging flags") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
	out.Reset()
	code := run([]string{"-public-ip", "x\ny"}, noEnv, &out, &errOut)
	if code != exitUsage {
		t.Errorf("invalid flag: exit %d, want %d", code, exitUsage)
	}
	if got, want := errOut.String(), `agentd: invalid --public-ip "x\ny": ParseAddr("x\ny"): unable to parse IP`+"\n"; got != want {
		t.Errorf("invalid flag: stderr %q, want %q", got, want)
	}
	if out.Len() != 0 {
		t.Errorf("invalid flag: stdout %q, want nothing", out.String())
	}
	errOut.Reset()
	if code := run(nil, envMap(map[string]string{"AGENTD_DOCKER_ACCEPT_FWMARK": "0/0x200000"}), &out, &errOut); code != exitUsage ||
		!strings.Contains(errOut.String(), `invalid AGENTD_DOCKER_ACCEPT_FWMARK "0/0x200000": the mark must not be 0`) {
		t.Errorf("invalid mark: exit %d, stderr %q; want %d naming the variable", code, errOut.String(), exitUsage)
	}
}

// TestMissingTLSFileIsRetried: a TLS file that is missing (not there yet:
// config management or a vault agent may write it after boot) is a failure
// at run time, which systemd retries, not a usage error that it leaves down.
// The agent fails at its etcd client, before it changes anything; still it
// runs in a network namespace of its own, with the test's own state dir and
// subnet file, so that nothing it could do reaches the host's network.
func TestMissingTLSFileIsRetried(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "needs root for a network namespace of its own (CLONE_NEWNET)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	code, log := runHelperIn(t, syscall.CLONE_NEWNET, "agentd-netns", "--etcd-endpoints=https://127.0.0.1:1", "--etcd-cafile="+ca,
		"--iface=lo", "--state-dir="+dir, "--subnet-file="+filepath.Join(dir, "subnet.env"))
	if code != exitFailure || !strings.Contains(log, ca) {
		t.Errorf("missing --etcd-cafile: exit %d, want %d with a message naming the file; output:\n%s", code, exitFailure, log)
	}
}

// renderArgs is the command line that sets every field of c, for the
// round-trip property of the fuzz target.
func renderArgs(c agent.Config) []string {
	args := []string{
		"--etcd-endpoints=" + strings.Join(c.EtcdEndpoints, ","),
		"--etcd-prefix=" + c.EtcdPrefix,
		"--etcd-cafile=" + c.EtcdCAFile,
		"--etcd-certfile=" + c.EtcdCertFile,
		"--etcd-keyfile=" + c.EtcdKeyFile,
		"--etcd-username=" + c.EtcdUsername,
		"--etcd-password=" + c.EtcdPassword,
		"--subnet-file=" + c.SubnetFile,
		fmt.Sprintf("--ip-masq=%t", c.IPMasq),
		fmt.Sprintf("--iptables-forward-rules=%t", c.IPTablesForwardRules),
		"--iptables-mode=" + c.IPTablesMode,
		"--healthz-addr=" + c.HealthzAddr,
		"--subnet-lease-ttl=" + c.SubnetLeaseTTL.String(),
		"--resync-interval=" + c.ResyncInterval.String(),
		fmt.Sprintf("--iptables-resync=%d", c.IPTablesResync/time.Second),
		"--etcd-endpoint-check-interval=" + c.EtcdEndpointCheckInterval.String(),
		"--state-dir=" + c.StateDir,
		fmt.Sprintf("--release-lease=%t", c.ReleaseLease),
	}
	for _, s := range c.Ifaces {
		args = append(args, "--iface="+s)
	}
	for _, re := range c.IfaceRegexes {
		args = append(args, "--iface-regex="+re.String())
	}
	if c.IfaceCanReach.IsValid() {
		args = append(args, "--iface-can-reach="+c.IfaceCanReach.String())
	}
	if c.PublicIP.IsValid() {
		args = append(args, "--public-ip="+c.PublicIP.String())
	}
	if !c.DockerAcceptFwMark.IsZero() {
		args = append(args, "--docker-accept-fwmark="+c.DockerAcceptFwMark.String())
	}
	return args
}

// FuzzParseArgs: parsing never panics; a Config it returns validates, and
// writing that Config back as flags parses to the same Config.
//
// args is split at newlines into arguments; env holds NAME=value lines.
func FuzzParseArgs(f *testing.F) {
	f.Add("-etcd-endpoints=http://198.18.0.254:2379\n-iface\neth0\n-v=2", "")
	f.Add("--iface=eth0,eth1\n--iface-regex=^en\n--public-ip=198.18.0.1\n--healthz-port=8471", "FLANNELD_IP_MASQ=true")
	f.Add("-etcd-password\n-secret\n--subnet-lease-ttl=5s\n--\nx", "AGENTD_IFACE=eth0\nFLANNELD_IFACE_REGEX=^(a|b){1,2},c")
	f.Add("--help", "")
	f.Add("-v\n3\n-vmodule=x=1\n-hv", "FLANNELD_ETCD_ENDPOINTS=unix:///run/etcd.sock")
	f.Add("--etcd-endpoints=http://198.18.0.254:2379,http://198.18.0.253:2379\n--etcd-endpoint-check-interval=1m30s", "AGENTD_ETCD_ENDPOINT_CHECK_INTERVAL=0")
	f.Add("--healthz-addr=[::1]:0\n--iface-can-reach=::ffff:198.18.0.9", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN=10")
	f.Add("--iptables-resync=10\n-public-ipv6\n\n--kube-subnet-mgr=false", "FLANNELD_V=3\nAGENTD_VMODULE=x=2\nFLANNELD_IP_BLACKHOLE_ROUTE=true")
	f.Add("--healthz-port=9000\n--iface-regex=^ens", "AGENTD_HEALTHZ_ADDR=127.0.0.1:8471\nAGENTD_IFACE=eth0\nFLANNELD_HEALTHZ_IP=::1")
	f.Add("--docker-accept-fwmark=0x200000/0x200000", "AGENTD_DOCKER_ACCEPT_FWMARK=0b1/3")
	f.Fuzz(func(t *testing.T, argText, envText string) {
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\n")
		}
		env := map[string]string{}
		for _, line := range strings.Split(envText, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				env[k] = v
			}
		}
		logFlags, _, _ := testLogFlags()
		opts, err := parseArgs(args, envMap(env), logFlags)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("empty error for %q", args)
			}
			return
		}
		if opts.help || opts.version {
			return
		}
		if err := opts.cfg.Validate(); err != nil {
			t.Fatalf("parseArgs(%q) returned a Config that does not validate: %v", args, err)
		}
		again := renderArgs(opts.cfg)
		logFlags, _, _ = testLogFlags()
		opts2, err := parseArgs(again, envMap(nil), logFlags)
		if err != nil {
			t.Fatalf("re-parsing %q (from %q): %v", again, args, err)
		}
		c1, c2 := opts.cfg, opts2.cfg
		r1, r2 := regexStrings(&c1), regexStrings(&c2)
		if !reflect.DeepEqual(c1, c2) || !reflect.DeepEqual(r1, r2) {
			t.Fatalf("round trip of %q changed the Config:\n got %+v %q\nwant %+v %q", args, c2, r2, c1, r1)
		}
	})
}

// TestParseArgsLoggingFromEnv: klog's -v and -vmodule come from the
// environment like agentd's own flags and with the same precedence, as
// flanneld reads FLANNELD_V; a DaemonSet has no other way to set them.
func TestParseArgsLoggingFromEnv(t *testing.T) {
	tests := []struct {
		name        string
		args        []string
		env         map[string]string
		wantV       int
		wantVmodule string
	}{
		{"FLANNELD_V", nil, map[string]string{"FLANNELD_V": "3"}, 3, ""},
		{"AGENTD_V over FLANNELD_V", nil, map[string]string{"FLANNELD_V": "3", "AGENTD_V": "4"}, 4, ""},
		{"command line over both", []string{"-v=2"}, map[string]string{"FLANNELD_V": "3", "AGENTD_V": "4"}, 2, ""},
		{"empty AGENTD_V is unset", nil, map[string]string{"AGENTD_V": "", "FLANNELD_V": "1"}, 1, ""},
		{"vmodule", nil, map[string]string{"FLANNELD_VMODULE": "lease*=4", "AGENTD_V": "1"}, 1, "lease*=4"},
		{"command-line vmodule over env", []string{"-vmodule=x=2"}, map[string]string{"AGENTD_VMODULE": "y=3"}, 0, "x=2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logFlags, v, vmodule := testLogFlags()
			if _, err := parseArgs(tt.args, envMap(tt.env), logFlags); err != nil {
				t.Fatalf("parseArgs: %v", err)
			}
			if *v != tt.wantV || *vmodule != tt.wantVmodule {
				t.Errorf("-v=%d -vmodule=%q, want -v=%d -vmodule=%q", *v, *vmodule, tt.wantV, tt.wantVmodule)
			}
		})
	}

	logFlags, _, _ := testLogFlags()
	_, err := parseArgs(nil, envMap(map[string]string{"AGENTD_V": "high"}), logFlags)
	if want := `invalid AGENTD_V "high": parse error`; err == nil || err.Error() != want {
		t.Errorf("AGENTD_V=high: error %v, want %s", err, want)
	}
}

// TestRunVerbosityFromEnv checks the same with klog's real flags, whose names
// the environment must match.
func TestRunVerbosityFromEnv(t *testing.T) {
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	defer func() { _ = klogFlags.Set("v", "0") }()
	if _, err := parseArgs(nil, envMap(map[string]string{"FLANNELD_V": "3", "AGENTD_V": "3"}), klogFlags); err != nil {
		t.Fatal(err)
	}
	if got := klogFlags.Lookup("v").Value.String(); got != "3" || !klog.V(3).Enabled() {
		t.Errorf("klog -v = %s after FLANNELD_V=3 AGENTD_V=3, want 3", got)
	}
}

// TestParseArgsFlanneldFlags: flanneld's flags that agentd does not implement
// neither stop an existing unit (a usage error, which RestartPreventExitStatus
// then keeps down) nor pass silently. Those whose absence is harmless are
// accepted with one warning each, naming the flag or variable and why; those
// asking for something agentd cannot do are refused with the reason.
func TestParseArgsFlanneldFlags(t *testing.T) {
	accepted := []struct {
		name string
		args []string
		env  map[string]string
		warn []string // one warning each, in this order (substrings)
	}{
		{"single dash, value apart", []string{"-subnet-lease-renew-margin", "10", "-iface", "eth0"}, nil,
			[]string{"--subnet-lease-renew-margin is deprecated and ignored"}},
		{"from FLANNELD_", nil, map[string]string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "10"},
			[]string{"FLANNELD_SUBNET_LEASE_RENEW_MARGIN is deprecated and ignored"}},
		{"empty public-ipv6", []string{"--public-ipv6="}, nil,
			[]string{"--public-ipv6 is ignored: agentd's backends carry IPv4 only"}},
		{"kube-subnet-mgr off", []string{"--kube-subnet-mgr=false"}, nil,
			[]string{"--kube-subnet-mgr is ignored: agentd always leases from etcd"}},
		{"kube subnet manager settings", []string{"--kube-api-url=https://198.18.0.1:6443", "--kubeconfig-file=/etc/k.conf",
			"--kube-annotation-prefix=example.com", "--net-config-path=/etc/kube-flannel/net-conf.json", "--set-node-network-unavailable=false"}, nil,
			[]string{"--kube-api-url is ignored: only flanneld's Kubernetes subnet manager", "--kube-annotation-prefix is ignored",
				"--kubeconfig-file is ignored", "--net-config-path is ignored: agentd reads the network config from etcd",
				"--set-node-network-unavailable is ignored"}},
		{"blackhole route off", []string{"--ip-blackhole-route=false"}, nil, []string{"--ip-blackhole-route is ignored"}},
		{"fully-random off without ip-masq", []string{"--ip-masq-fully-random-disable"}, nil,
			[]string{"--ip-masq-fully-random-disable is ignored: --ip-masq is off"}},
		{"renew margin", []string{"-subnet-lease-renew-margin=30"}, nil, []string{"--subnet-lease-renew-margin is deprecated and ignored"}},
	}
	for _, tt := range accepted {
		t.Run(tt.name, func(t *testing.T) {
			logFlags, _, _ := testLogFlags()
			opts, err := parseArgs(tt.args, envMap(tt.env), logFlags)
			if err != nil {
				t.Fatalf("parseArgs(%q): %v", tt.args, err)
			}
			if len(opts.warnings) != len(tt.warn) {
				t.Fatalf("warnings %q, want %d", opts.warnings, len(tt.warn))
			}
			for i, w := range tt.warn {
				if !strings.Contains(opts.warnings[i], w) {
					t.Errorf("warning %q does not contain %q", opts.warnings[i], w)
				}
			}
			if strings.Contains(opts.usage, "subnet-lease-renew-margin") {
				t.Errorf("--help lists the ignored flags")
			}
		})
	}

	refused := []struct {
		name string
		args []string
		env  map[string]string
		want string // the whole error
	}{
		{"kube-subnet-mgr", []string{"--kube-subnet-mgr"}, nil,
			`unsupported --kube-subnet-mgr "true": agentd has no Kubernetes subnet manager; it leases subnets from etcd (--etcd-endpoints)`},
		{"kube-subnet-mgr from env", nil, map[string]string{"FLANNELD_KUBE_SUBNET_MGR": "true"},
			`unsupported FLANNELD_KUBE_SUBNET_MGR "true": agentd has no Kubernetes subnet manager; it leases subnets from etcd (--etcd-endpoints)`},
		{"public-ipv6", []string{"-public-ipv6", "2001:db8::7"}, nil,
			`unsupported --public-ipv6 "2001:db8::7": agentd's backends carry IPv4 only and cannot advertise an IPv6 address`},
		{"blackhole route", []string{"--ip-blackhole-route"}, nil,
			`unsupported --ip-blackhole-route "true": agentd adds no blackhole route for its own subnet`},
		{"fully-random off with ip-masq", []string{"--ip-masq", "--ip-masq-fully-random-disable=true"}, nil,
			`unsupported --ip-masq-fully-random-disable "true": agentd always masquerades with --random-fully where iptables supports it`},
		{"bad value", []string{"--subnet-lease-renew-margin=soon"}, nil,
			`invalid --subnet-lease-renew-margin "soon": strconv.ParseInt: parsing "soon": invalid syntax`},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			logFlags, _, _ := testLogFlags()
			_, err := parseArgs(tt.args, envMap(tt.env), logFlags)
			if err == nil || err.Error() != tt.want {
				t.Errorf("parseArgs(%q) error:\n got %v\nwant %s", tt.args, err, tt.want)
			}
		})
	}

	var out, errOut bytes.Buffer
	if code := run([]string{"--kube-subnet-mgr"}, envMap(nil), &out, &errOut); code != exitUsage || !strings.Contains(errOut.String(), "agentd has no Kubernetes subnet manager") {
		t.Errorf("--kube-subnet-mgr: exit %d, stderr %q; want %d and the reason", code, errOut.String(), exitUsage)
	}
}

// TestParseArgsAlternativeForms: a setting that has several forms (the health
// server's address; the interface choice) takes its value from the best
// source that gives any form of it: a form given on the command line beats
// every other form from the environment, AGENTD_ beats FLANNELD_. Forms from
// one source combine as before.
func TestParseArgsAlternativeForms(t *testing.T) {
	tests := []parseCase{
		{
			name: "command-line port over the env file's address",
			args: []string{"--healthz-port=9000"},
			env:  map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "0.0.0.0:9000" },
		},
		{
			name: "command-line port with the ip from the environment",
			args: []string{"--healthz-port=9000"},
			env:  map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:8471", "FLANNELD_HEALTHZ_IP": "127.0.0.2"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.2:9000" },
		},
		{
			name: "command-line address over env ip and port",
			args: []string{"--healthz-addr=127.0.0.1:9000"},
			env:  map[string]string{"FLANNELD_HEALTHZ_PORT": "8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.1:9000" },
		},
		{
			name: "AGENTD_ port over FLANNELD_ address",
			env:  map[string]string{"AGENTD_HEALTHZ_PORT": "9000", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "0.0.0.0:9000" },
		},
		{
			name: "both forms from one source: the address wins, with a warning",
			env:  map[string]string{"AGENTD_HEALTHZ_PORT": "9000", "AGENTD_HEALTHZ_ADDR": "127.0.0.1:8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.1:8471" },
			warn: "AGENTD_HEALTHZ_PORT is ignored: AGENTD_HEALTHZ_ADDR is set",
		},
		{
			// flanneld serves nothing for --healthz-ip without
			// --healthz-port, so the flag does not turn off the
			// address agentd.env gives; it is ignored, and says so.
			name: "command-line ip alone keeps the env file's address, with a warning",
			args: []string{"--healthz-ip=127.0.0.2"},
			env:  map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.1:8471" },
			warn: "--healthz-ip is ignored: AGENTD_HEALTHZ_ADDR is set",
		},
		{
			name: "command-line ip with the port from the environment",
			args: []string{"--healthz-ip=127.0.0.2"},
			env:  map[string]string{"FLANNELD_HEALTHZ_PORT": "8471"},
			want: func(c *agent.Config) { c.HealthzAddr = "127.0.0.2:8471" },
		},
		{
			name: "ip alone: off, as in flanneld, with a warning",
			args: []string{"--healthz-ip=127.0.0.2"},
			want: func(*agent.Config) {},
			warn: "--healthz-ip is ignored: --healthz-port is 0, so the health server is off",
		},
		{
			name:    "command-line regex over env iface",
			args:    []string{"--iface-regex=^ens"},
			env:     map[string]string{"AGENTD_IFACE": "eth0"},
			want:    func(*agent.Config) {},
			regexes: []string{"^ens"},
		},
		{
			name: "command-line can-reach over env iface and regex",
			args: []string{"--iface-can-reach=198.18.0.254"},
			env:  map[string]string{"FLANNELD_IFACE": "eth0", "AGENTD_IFACE_REGEX": "^en"},
			want: func(c *agent.Config) { c.IfaceCanReach = netip.MustParseAddr("198.18.0.254") },
		},
		{
			name: "AGENTD_ iface over FLANNELD_ regex",
			env:  map[string]string{"AGENTD_IFACE": "eth0", "FLANNELD_IFACE_REGEX": "^en"},
			want: func(c *agent.Config) { c.Ifaces = []string{"eth0"} },
		},
		{
			name:    "forms from the command line combine",
			args:    []string{"--iface=eth0", "--iface-regex=^en"},
			env:     map[string]string{"AGENTD_IFACE_CAN_REACH": "198.18.0.254"},
			want:    func(c *agent.Config) { c.Ifaces = []string{"eth0"} },
			regexes: []string{"^en"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkParsed(t, tt.args, tt.env, tt.want, tt.regexes, tt.warn)
		})
	}
}

// FuzzEndpointPasswordHidden: the password of an endpoint's user
// information, whatever it holds and wherever the endpoint is given (flag,
// AGENTD_ or FLANNELD_ variable), appears in no error, not even its first or
// last part. The password is marked at both ends so that a part quoted
// alone is found. Not covered: a password holding ',' (the list is split
// there first, so its first part reads as a host and port), and unix://
// URLs (a socket path may hold '@', so their user information ends at the
// first '/', as url.Parse has it).
func FuzzEndpointPasswordHidden(f *testing.F) {
	f.Add("http://", "secret", "etcd:2379", 0)
	f.Add("https://198.18.0.254:2379,http://", "aB3/xY+z", "[fd00::1]:2379/", 1)
	f.Add("", "a?b#c%zz", "etcd", 2)
	f.Add("HTTP://", "p@ss", "etcd:x", 0)
	f.Fuzz(func(t *testing.T, before, password, after string, where int) {
		const mark = "Q7MARK"
		if strings.Contains(password, ",") || strings.Contains(strings.ToLower(before), "unix") ||
			strings.Contains(strings.ToUpper(before+after), mark) {
			return
		}
		ep := before + "user:" + mark + password + mark + "@" + after
		var args []string
		env := map[string]string{}
		switch where % 3 {
		case 0:
			args = []string{"--etcd-endpoints=" + ep}
		case 1:
			env["AGENTD_ETCD_ENDPOINTS"] = ep
		default:
			env["FLANNELD_ETCD_ENDPOINTS"] = ep
		}
		logFlags, _, _ := testLogFlags()
		_, err := parseArgs(args, envMap(env), logFlags)
		if err == nil {
			t.Fatalf("endpoint %q with user information accepted", ep)
		}
		if strings.Contains(strings.ToUpper(err.Error()), mark) {
			t.Fatalf("endpoint %q: the error quotes the password: %v", ep, err)
		}
	})
}
