package main

import (
	"errors"
	goflag "flag"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/internal/healthzaddr"
	"github.com/agentd/agentd/internal/longflags"
	"github.com/spf13/pflag"
)

// Environment variables: every setting flag can also come from
// AGENTD_<NAME> or FLANNELD_<NAME>, where NAME is the flag name upper-cased
// with dashes as underscores (--etcd-endpoints: AGENTD_ETCD_ENDPOINTS,
// FLANNELD_ETCD_ENDPOINTS). The command line wins over AGENTD_, which wins
// over FLANNELD_. Empty variables count as unset. Repeatable flags take a
// comma-separated list (for --iface-regex, commas inside (), [] or {} belong
// to the expression). --help, --version and --release-lease are not read
// from the environment: a stray variable in a DaemonSet must not turn every
// pod into a one-shot lease release. Of klog's flags, the ones flanneld has
// (-v, -vmodule, -log_backtrace_at) are read from the environment too, with
// the same precedence: flanneld honours FLANNELD_V, and a DaemonSet has no
// other way to set the verbosity.
var envPrefixes = healthzaddr.EnvPrefixes

// loggingFromEnv are the logging flags read from the environment.
var loggingFromEnv = map[string]bool{"v": true, "vmodule": true, "log_backtrace_at": true}

// flagValues are the raw flag values before they become an agent.Config.
type flagValues struct {
	etcdEndpoints string
	etcdPrefix    string
	etcdCAFile    string
	etcdCertFile  string
	etcdKeyFile   string
	etcdUsername  string
	etcdPassword  string

	ifaces        []string
	ifaceRegexes  []string
	ifaceCanReach string
	publicIP      string

	subnetFile   string
	ipMasq       bool
	forwardRules bool
	iptMode      string
	dockerFwMark string

	leaseTTL      time.Duration
	resync        time.Duration
	iptResync     int
	endpointCheck time.Duration
	stateDir      string

	releaseLease bool
	version      bool
	help         bool
}

// notFromEnv are the flags that are actions rather than settings.
var notFromEnv = map[string]bool{"help": true, "version": true, "release-lease": true}

// healthz are the health server's flags, which healthzaddr.Resolve takes
// from the environment, not applyEnv.
var healthz = map[string]bool{healthzaddr.AddrFlag: true, healthzaddr.IPFlag: true, healthzaddr.PortFlag: true}

// newFlagSet defines agentd's flags, bound to v. Defaults come from
// agent.DefaultConfig so that --help and the library agree.
func newFlagSet(v *flagValues) *pflag.FlagSet {
	d := agent.DefaultConfig()
	fs := pflag.NewFlagSet("agentd", pflag.ContinueOnError)
	fs.SortFlags = false
	// Parsing reports errors to the caller; it prints nothing itself.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	fs.StringVar(&v.etcdEndpoints, "etcd-endpoints", strings.Join(d.EtcdEndpoints, ","), "comma-separated etcd endpoints: URLs (http, https, unix, unixs) or host:port, as flanneld takes them")
	fs.StringVar(&v.etcdPrefix, "etcd-prefix", d.EtcdPrefix, "etcd key prefix of the network (its config is <prefix>/config)")
	fs.StringVar(&v.etcdCAFile, "etcd-cafile", "", "CA certificate file to verify etcd's TLS certificate")
	fs.StringVar(&v.etcdCertFile, "etcd-certfile", "", "client certificate file for etcd TLS (needs --etcd-keyfile)")
	fs.StringVar(&v.etcdKeyFile, "etcd-keyfile", "", "client key file for etcd TLS (needs --etcd-certfile)")
	fs.StringVar(&v.etcdUsername, "etcd-username", "", "etcd user name for authentication")
	fs.StringVar(&v.etcdPassword, "etcd-password", "", "etcd password for authentication")

	fs.StringArrayVar(&v.ifaces, "iface", nil, "underlay interface name or IPv4 address; repeat (or give a comma list) to try each in order")
	fs.StringArrayVar(&v.ifaceRegexes, "iface-regex", nil, "regular expression matched against the interfaces' IPv4 addresses, then their names (as in flanneld); repeat to try each in order")
	fs.StringVar(&v.ifaceCanReach, "iface-can-reach", "", "use the interface the kernel routes this IPv4 address through")
	fs.StringVar(&v.publicIP, "public-ip", "", "IPv4 address peers send to (default: the interface address); without --iface, --iface-regex and --iface-can-reach, the interface holding it is used, as in flanneld")

	fs.StringVar(&v.subnetFile, "subnet-file", d.SubnetFile, "where to write subnet.env for dockerd and the CNI plugin")
	fs.BoolVar(&v.ipMasq, "ip-masq", d.IPMasq, "masquerade traffic leaving the overlay network")
	fs.BoolVar(&v.forwardRules, "iptables-forward-rules", d.IPTablesForwardRules, "accept overlay traffic in the FORWARD chain")
	fs.StringVar(&v.iptMode, "iptables-mode", "", "iptables backend for our rules: nft, legacy, auto (the one the host's dockerd or kube-proxy uses; for images carrying both), or empty for the backend of the iptables command in PATH")
	fs.StringVar(&v.dockerFwMark, "docker-accept-fwmark", "", "value/mask to set in mangle FORWARD on traffic within the overlay network, e.g. 0x200000/0x200000, for dockerd --bridge-accept-fwmark with the same value (Docker's nftables firewall drops that traffic otherwise); empty: off")

	fs.String("healthz-addr", d.HealthzAddr, "host:port of the health server: /healthz, /readyz, /status, /metrics (empty: off)")
	fs.String("healthz-ip", healthzaddr.DefaultIP, "address of the health server when --healthz-port is set (flannel's form)")
	fs.Int("healthz-port", 0, "port of the health server (0: off; --healthz-addr wins when both are set)")

	fs.DurationVar(&v.leaseTTL, "subnet-lease-ttl", d.SubnetLeaseTTL, "TTL of the etcd lease that holds this host's subnet (whole seconds, at least 1s)")
	fs.DurationVar(&v.resync, "resync-interval", d.ResyncInterval, "how often the kernel state is fully compared with the lease set")
	fs.IntVar(&v.iptResync, "iptables-resync", int(d.IPTablesResync/time.Second), "how often, in seconds, the iptables rules are checked and repaired")
	fs.DurationVar(&v.endpointCheck, "etcd-endpoint-check-interval", d.EtcdEndpointCheckInterval, "how often each of --etcd-endpoints is asked for its status, so that etcd alarms (NOSPACE), a member without a leader and, with several, one down are reported (0: never)")
	fs.StringVar(&v.stateDir, "state-dir", d.StateDir, "directory for state kept across restarts (host identity, VTEP MAC)")

	fs.BoolVar(&v.releaseLease, "release-lease", false, "release this host's lease, remove subnet.env, the overlay's devices, routes and iptables chains, and exit (decommission; stop the running agent first)")
	fs.BoolVar(&v.version, "version", false, "print the version and exit")
	fs.BoolVarP(&v.help, "help", "h", false, "print this help and exit")

	for _, c := range flanneldOnly {
		switch c.kind {
		case "bool":
			fs.Bool(c.name, false, "flanneld's; see parseArgs")
		case "int":
			fs.Int(c.name, 0, "flanneld's; see parseArgs")
		default:
			fs.String(c.name, "", "flanneld's; see parseArgs")
		}
		_ = fs.MarkHidden(c.name)
	}
	return fs
}

// flanneldFlag is one of flanneld's flags that agentd does not implement. It
// is defined, hidden from --help, so that an existing flanneld unit or
// environment file does not make agentd exit with a usage error (which
// systemd's RestartPreventExitStatus then leaves down). When it is set, judge decides
// from its value and the other settings whether agentd does what flanneld
// would do without it: then it returns a warning (the text after "<flag> is
// ") and the flag is ignored; or not: then it returns why, and agentd refuses
// to start, since silently doing something else would be worse.
type flanneldFlag struct {
	name  string
	kind  string // "bool", "int" or "string"
	judge func(val string, v *flagValues) (refusal, warning string)
}

// kubeOnly is why the Kubernetes subnet manager's settings can be ignored.
const kubeOnly = "ignored: only flanneld's Kubernetes subnet manager (--kube-subnet-mgr) uses it, and agentd leases from etcd"

// flanneldOnly are flanneld's flags (its main.go, v0.26) that agentd does not
// implement, in flanneld's order; README's "Flags and environment" lists
// them. The rest of flanneld's flags are agentd's own (or klog's -v, -vmodule
// and -log_backtrace_at).
var flanneldOnly = []flanneldFlag{
	{"public-ipv6", "string", func(val string, _ *flagValues) (string, string) {
		if val != "" {
			return "agentd's backends carry IPv4 only and cannot advertise an IPv6 address", ""
		}
		return "", "ignored: agentd's backends carry IPv4 only"
	}},
	{"subnet-lease-renew-margin", "int", ignore("deprecated and ignored: agentd renews its lease continuously with an etcd keepalive; remove it")},
	{"ip-masq-fully-random-disable", "bool", func(val string, v *flagValues) (string, string) {
		switch {
		case !v.ipMasq:
			return "", "ignored: --ip-masq is off"
		case val == "true":
			return "agentd always masquerades with --random-fully where iptables supports it", ""
		}
		return "", "ignored: agentd masquerades with --random-fully where iptables supports it, as false asks"
	}},
	{"kube-subnet-mgr", "bool", onlyFalse("agentd has no Kubernetes subnet manager; it leases subnets from etcd (--etcd-endpoints)", "ignored: agentd always leases from etcd")},
	{"kube-api-url", "string", ignore(kubeOnly)},
	{"kube-annotation-prefix", "string", ignore(kubeOnly)},
	{"kubeconfig-file", "string", ignore(kubeOnly)},
	{"ip-blackhole-route", "bool", onlyFalse("agentd adds no blackhole route for its own subnet", "ignored: agentd adds no blackhole route, as false asks")},
	{"net-config-path", "string", ignore("ignored: agentd reads the network config from etcd (<prefix>/config)")},
	{"set-node-network-unavailable", "bool", ignore(kubeOnly)},
}

// ignore judges every value of a flag harmless.
func ignore(warning string) func(string, *flagValues) (string, string) {
	return func(string, *flagValues) (string, string) { return "", warning }
}

// onlyFalse judges a boolean flag harmless when false and refuses it when
// true.
func onlyFalse(refusal, warning string) func(string, *flagValues) (string, string) {
	return func(val string, _ *flagValues) (string, string) {
		if val == "true" {
			return refusal, ""
		}
		return "", warning
	}
}

// options is the outcome of parsing: either an action (help, version) or a
// validated Config to run with.
type options struct {
	cfg      agent.Config
	help     bool
	version  bool
	usage    string
	warnings []string // to log once logging is set up
}

// parseArgs turns the command line (without the program name) and the
// environment into options. It prints nothing and reads no global state: the
// environment comes through lookupEnv, and extra holds flags from other
// packages (klog's), added to the set as they are. Its errors are one line
// and name the flag or variable at fault. When it returns a Config, the
// Config has passed Validate.
func parseArgs(args []string, lookupEnv func(string) (string, bool), extra *goflag.FlagSet) (options, error) {
	var v flagValues
	fs := newFlagSet(&v)
	own := map[string]bool{}
	fs.VisitAll(func(f *pflag.Flag) { own[f.Name] = true })
	if extra != nil {
		fs.AddGoFlagSet(extra)
	}
	opts := options{usage: usage(fs, own)}

	if err := fs.Parse(longflags.Normalize(fs, args)); err != nil {
		return opts, flagError(err)
	}
	if v.help {
		opts.help = true
		return opts, nil
	}
	if v.version {
		opts.version = true
		return opts, nil
	}
	if rest := fs.Args(); len(rest) > 0 {
		msg := fmt.Sprintf("unexpected argument %q", rest[0])
		if _, err := strconv.ParseBool(rest[0]); err == nil {
			msg += " (give a boolean flag's value after '=', as in --ip-masq=false)"
		}
		return opts, errors.New(msg)
	}

	// source names where each setting came from, for error messages.
	source := map[string]string{}
	fs.Visit(func(f *pflag.Flag) { source[f.Name] = "--" + f.Name })
	if err := applyEnv(fs, own, lookupEnv, source); err != nil {
		return opts, err
	}
	// where renders a setting for an error: --flag, or the variable it came
	// from.
	where := func(flag string) string {
		if s, ok := source[flag]; ok {
			return s
		}
		return "--" + flag
	}
	bad := func(flag, value string, err error) error {
		return fmt.Errorf("invalid %s %q: %w", where(flag), value, err)
	}

	// Judged here, before it is turned into nanoseconds, where a count of
	// seconds this large, either way, would wrap around (18446744075 to
	// about 1.29 s, -18446744072 to about 1.7 s) and pass Validate.
	switch maxS := int(agent.MaxResyncInterval / time.Second); {
	case v.iptResync < 1:
		return opts, bad("iptables-resync", strconv.Itoa(v.iptResync), errors.New("must be at least 1 (seconds)"))
	case v.iptResync > maxS:
		return opts, bad("iptables-resync", strconv.Itoa(v.iptResync), fmt.Errorf("must be at most %d (seconds)", maxS))
	}
	cfg := agent.Config{
		EtcdPrefix:                v.etcdPrefix,
		EtcdCAFile:                v.etcdCAFile,
		EtcdCertFile:              v.etcdCertFile,
		EtcdKeyFile:               v.etcdKeyFile,
		EtcdUsername:              v.etcdUsername,
		EtcdPassword:              v.etcdPassword,
		SubnetFile:                v.subnetFile,
		IPMasq:                    v.ipMasq,
		IPTablesForwardRules:      v.forwardRules,
		IPTablesMode:              v.iptMode,
		SubnetLeaseTTL:            v.leaseTTL,
		ResyncInterval:            v.resync,
		IPTablesResync:            time.Duration(v.iptResync) * time.Second,
		EtcdEndpointCheckInterval: v.endpointCheck,
		StateDir:                  v.stateDir,
		ReleaseLease:              v.releaseLease,
	}
	// Empty entries (a comma too many, a templated unit's empty variable)
	// are skipped: flanneld runs with them (v0.28.10); a list of nothing
	// else Validate refuses.
	var emptyEndpoints int
	for _, ep := range strings.Split(v.etcdEndpoints, ",") {
		if ep = strings.TrimSpace(ep); ep == "" {
			emptyEndpoints++
			continue
		}
		cfg.EtcdEndpoints = append(cfg.EtcdEndpoints, ep)
	}
	// A command line is every local user's to read (/proc/<pid>/cmdline,
	// ps -ef); the environment only root's.
	if v.etcdPassword != "" && source["etcd-password"] == "--etcd-password" {
		opts.warnings = append(opts.warnings, passwordOnCommandLine)
	}
	if emptyEndpoints > 0 && len(cfg.EtcdEndpoints) > 0 {
		what := "1 empty entry (a comma too many); it is"
		if emptyEndpoints > 1 {
			what = fmt.Sprintf("%d empty entries (a comma too many); they are", emptyEndpoints)
		}
		opts.warnings = append(opts.warnings, where("etcd-endpoints")+" has "+what+" ignored, as in flanneld")
	}
	for _, s := range v.ifaces {
		for _, name := range strings.Split(s, ",") {
			cfg.Ifaces = append(cfg.Ifaces, strings.TrimSpace(name))
		}
	}
	for _, s := range v.ifaceRegexes {
		re, err := regexp.Compile(s)
		if err != nil {
			return opts, bad("iface-regex", s, err)
		}
		cfg.IfaceRegexes = append(cfg.IfaceRegexes, re)
	}
	var err error
	if cfg.IfaceCanReach, err = parseIPv4(v.ifaceCanReach); err != nil {
		return opts, bad("iface-can-reach", v.ifaceCanReach, err)
	}
	if cfg.PublicIP, err = parseIPv4(v.publicIP); err != nil {
		return opts, bad("public-ip", v.publicIP, err)
	}
	if v.dockerFwMark != "" {
		if cfg.DockerAcceptFwMark, err = iptables.ParseMark(v.dockerFwMark); err != nil {
			return opts, bad("docker-accept-fwmark", v.dockerFwMark, err)
		}
	}

	// The health server's flags, which applyEnv leaves alone: their
	// environment and forms are healthzaddr's, which agentctl status
	// reads too, so that it asks where agentd listens.
	given := map[string]string{}
	for _, f := range healthzaddr.Flags {
		if fs.Changed(f) {
			given[f] = fs.Lookup(f).Value.String()
		}
	}
	hz, err := healthzaddr.Resolve(given, lookupEnv)
	if err != nil {
		return opts, err
	}
	cfg.HealthzAddr = hz.Addr
	if hz.From != "" {
		source["healthz-addr"] = hz.From
	}
	opts.warnings = append(opts.warnings, hz.Warnings...)
	// An action in the environment would repeat at every start (a
	// decommission each boot), so it is not taken from there; an operator
	// who wrote it there meant something, so say that it did nothing.
	if !v.releaseLease {
		for _, p := range envPrefixes {
			name := p + "RELEASE_LEASE"
			if val, ok := lookupEnv(name); ok && val != "" {
				opts.warnings = append(opts.warnings, fmt.Sprintf("%s is ignored: --release-lease is an action, taken from the command line only (agentd --release-lease)", name))
			}
		}
	}
	for _, c := range flanneldOnly {
		if !fs.Changed(c.name) {
			continue
		}
		val := fs.Lookup(c.name).Value.String()
		refusal, warning := c.judge(val, &v)
		if refusal != "" {
			return opts, fmt.Errorf("unsupported %s %q: %s", where(c.name), val, refusal)
		}
		opts.warnings = append(opts.warnings, where(c.name)+" is "+warning)
	}

	if err := cfg.Validate(); err != nil {
		var ce *agent.ConfigError
		if errors.As(err, &ce) {
			return opts, bad(ce.Flag, ce.Value, ce.Err)
		}
		return opts, err
	}
	opts.cfg = cfg
	return opts, nil
}

// alternativeForms are the settings that can be given in more than one form,
// each form a set of flags: the interface choice (--iface, --iface-regex,
// --iface-can-reach, which flanneld tries in that order; the health
// server's address, --healthz-addr or flanneld's --healthz-ip with
// --healthz-port, is decided the same way by healthzaddr.Resolve, which
// agentctl status shares). Such a setting is decided by where its forms
// came from: the forms from the best source (command line, then AGENTD_, then FLANNELD_) are used,
// and the environment's values for the other forms are not, so a form on the
// command line beats every form from the environment, as the command line
// beats the environment for a single flag. Forms from one source combine
// (--iface with --iface-regex).
var alternativeForms = [][][]string{
	{{"iface"}, {"iface-regex"}, {"iface-can-reach"}},
}

// passwordOnCommandLine is the warning for --etcd-password given on the
// command line.
const passwordOnCommandLine = "--etcd-password is on the command line, which every local user can read (ps -ef, /proc/<pid>/cmdline): " +
	"give it as AGENTD_ETCD_PASSWORD in the environment instead (agentd.service reads /etc/agentd/agentd.env)"

// applyEnv sets each of agentd's own flags, and the logging flags in
// loggingFromEnv, that the command line left alone from AGENTD_<NAME> or else
// FLANNELD_<NAME> (but see alternativeForms), and records the variable used
// in source.
func applyEnv(fs *pflag.FlagSet, own map[string]bool, lookupEnv func(string) (string, bool), source map[string]string) error {
	type setting struct {
		name, val string
		rank      int // 1 for AGENTD_, 2 for FLANNELD_; 0 is the command line
	}
	fromEnv := map[string]setting{}
	fs.VisitAll(func(f *pflag.Flag) {
		if !(own[f.Name] || loggingFromEnv[f.Name]) || notFromEnv[f.Name] || healthz[f.Name] || f.Changed {
			return
		}
		for i, p := range envPrefixes {
			name := p + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
			if val, ok := lookupEnv(name); ok && val != "" {
				fromEnv[f.Name] = setting{name, val, i + 1}
				return
			}
		}
	})

	unset := len(envPrefixes) + 1
	formRank := func(form []string) int {
		r := unset
		for _, flag := range form {
			if fs.Changed(flag) {
				return 0
			}
			if s, ok := fromEnv[flag]; ok {
				r = min(r, s.rank)
			}
		}
		return r
	}
	for _, forms := range alternativeForms {
		best := unset
		for _, form := range forms {
			best = min(best, formRank(form))
		}
		for _, form := range forms {
			if formRank(form) > best {
				for _, flag := range form {
					delete(fromEnv, flag)
				}
			}
		}
	}

	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		s, ok := fromEnv[f.Name]
		if !ok || err != nil {
			return
		}
		source[f.Name] = s.name
		if serr := setFromEnv(fs, f, s.val); serr != nil {
			err = fmt.Errorf("invalid %s %q: %w", s.name, s.val, unwrapInvalid(serr))
		}
	})
	return err
}

// parseIPv4 parses an optional IPv4 address ("" is the zero Addr). An
// IPv4-mapped IPv6 address is taken as the IPv4 address it holds; Validate
// rejects other IPv6 addresses with the reason.
func parseIPv4(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	return a.Unmap(), nil
}

// setFromEnv sets flag f from an environment value; repeatable flags take a
// comma-separated list.
func setFromEnv(fs *pflag.FlagSet, f *pflag.Flag, val string) error {
	if f.Value.Type() != "stringArray" {
		return fs.Set(f.Name, val)
	}
	split := strings.Split
	if f.Name == "iface-regex" {
		split = splitTopLevel
	}
	for _, part := range split(val, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if err := fs.Set(f.Name, part); err != nil {
			return err
		}
	}
	return nil
}

// splitTopLevel splits s at each sep that is not escaped with a backslash
// and outside a group, a bracket expression, a repetition count and a \Q…\E
// quote, as Go's regexp reads them, so "^(eth|en)[0-9]{1,2}$,^bond" is two
// regular expressions and so is "[[:space:],],x", while "x{,y" is two
// ("x{" is a literal brace). Hand-written: no library splits a list of
// regular expressions.
func splitTopLevel(s, sep string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case strings.HasPrefix(s[i:], `\Q`):
			if end := strings.Index(s[i+2:], `\E`); end >= 0 {
				i += 2 + end + 1
			} else {
				i = len(s)
			}
		case c == '\\':
			i++ // the escaped byte is never a separator or a bracket
		case c == '[':
			i = classEnd(s, i)
		case c == '{':
			if n := len(repetitionCount.FindString(s[i:])); n > 0 {
				i += n - 1
			}
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth == 0 && strings.HasPrefix(s[i:], sep):
			parts = append(parts, s[start:i])
			start = i + len(sep)
			i += len(sep) - 1
		}
	}
	return append(parts, s[start:])
}

// repetitionCount is a repetition count at the start of a string; Go's
// regexp takes any other brace literally.
var repetitionCount = regexp.MustCompile(`^\{[0-9]+(?:,[0-9]*)?\}`)

// classEnd is the index in s of the ']' that ends the bracket expression
// opening at s[i], or len(s)-1 if none does. As in Go's regexp, a ']' first
// in it (after '[' or "[^") is literal, and so is the ']' of a class name
// ("[:alpha:]").
func classEnd(s string, i int) int {
	i++
	if i < len(s) && s[i] == '^' {
		i++
	}
	if i < len(s) && s[i] == ']' {
		i++
	}
	for ; i < len(s); i++ {
		switch {
		case s[i] == '\\':
			i++
		case strings.HasPrefix(s[i:], "[:"):
			if end := strings.Index(s[i+2:], ":]"); end >= 0 {
				i += 2 + end + 1
			}
		case s[i] == ']':
			return i
		}
	}
	return len(s) - 1
}

// flagError rewrites pflag's errors in agentd's one-line form.
func flagError(err error) error {
	var iv *pflag.InvalidValueError
	if errors.As(err, &iv) {
		return fmt.Errorf("invalid --%s %q: %w", iv.GetFlag().Name, iv.GetValue(), iv.Unwrap())
	}
	return err
}

// unwrapInvalid is the cause inside pflag's invalid-value error.
func unwrapInvalid(err error) error {
	var iv *pflag.InvalidValueError
	if errors.As(err, &iv) {
		return iv.Unwrap()
	}
	return err
}

// usage is the --help text: agentd's own flags, then the logging flags.
func usage(fs *pflag.FlagSet, own map[string]bool) string {
	mine := pflag.NewFlagSet("agentd", pflag.ContinueOnError)
	mine.SortFlags = false
	logging := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	fs.VisitAll(func(f *pflag.Flag) {
		if own[f.Name] {
			mine.AddFlag(f)
		} else {
			logging.AddFlag(f)
		}
	})
	var b strings.Builder
	b.WriteString(`Usage: agentd [flags]

agentd leases this host's subnet of the overlay network from etcd, writes
subnet.env, and keeps the kernel routes to every other host's subnet current.
It joins clusters run by flanneld and accepts flanneld's flags.

Flags:
`)
	b.WriteString(mine.FlagUsages())
	if logging.HasFlags() {
		b.WriteString("\nLogging flags (klog):\n")
		b.WriteString(logging.FlagUsages())
	}
	b.WriteString(`
Each setting can also come from the environment as AGENTD_<FLAG> or
FLANNELD_<FLAG> (FLAG upper-cased, dashes as underscores, e.g.
FLANNELD_ETCD_ENDPOINTS), and so can -v, -vmodule and -log_backtrace_at
(AGENTD_V=2); the command line wins, then AGENTD_, then FLANNELD_. Empty
variables are ignored. Repeatable flags take a comma-separated list.
Single-dash long flags (-etcd-endpoints=...) work too.
`)
	return b.String()
}
