// Command agentd-docker-opts turns the subnet.env agentd writes into
// dockerd's network options, for the docker.service drop-in
// (dist/systemd/docker.service.d/agentd.conf) and for hosts without systemd:
//
//	agentd-docker-opts --wait=60s --output=/run/flannel/docker-network.env
//	. /run/flannel/docker-network.env
//	dockerd $DOCKER_NETWORK_OPTIONS
//
// It writes (to --output atomically, or to stdout) a file that is both a
// systemd EnvironmentFile and a shell script:
//
//	DOCKER_IP_MASQ=false
//	DOCKER_NETWORK_OPTIONS="--bip=10.244.5.1/24 --mtu=1450 --ip-masq=false"
//
// The drop-in gives dockerd $DOCKER_NETWORK_OPTIONS, the values read and
// checked here, rather than reading subnet.env itself: subnet.env is written
// for shells and flannel's readers, and systemd reads some such files
// otherwise (see FuzzDropInCommand). DOCKER_IP_MASQ, for drop-ins of before
// 2026-12-06, is the opposite of FLANNEL_IPMASQ: when agentd masquerades
// traffic leaving the overlay, dockerd must not masquerade it again. Only the
// IPv4 keys are used.
//
// A missing (after --wait) or incomplete subnet.env is an error naming the
// file and the key (exit status 1), and nothing is written, so dockerd never
// starts with a bridge address that is not this host's lease. Complete means
// subnetenv.ParseComplete's rules, as for flannel's CNI plugin: every key
// agentd and flanneld write, FLANNEL_IPMASQ included, and a final newline,
// so that a file cut inside FLANNEL_MTU=1450 is not --mtu=145, and one cut
// before FLANNEL_IPMASQ=true not --ip-masq=true (mk-docker-opts.sh reads
// both that way). So is a
// dockerd configuration file (--docker-config, /etc/docker/daemon.json) that
// sets one of the options given here, or "bridge" (see checkDockerConfig),
// checked before any wait. That file is the one dockerd reads: the last
// --config-file among dockerd's own arguments, given after "--" (the drop-in
// passes $DOCKER_OPTS there, split as for dockerd), or else --docker-config.
// So, before any wait too, is a -b or --bridge among those arguments
// (dockerdBridge).
// So, before any wait too, is an --output in or under a directory another
// user could change (atomicfile.CheckPath), where the file that becomes
// dockerd's command line would be theirs to replace once written; and
// again, its directory made, just before the write (writeOutput).
// Exit status 64 (EX_USAGE, as agentd's and agentctl's) is a usage error.
//
// A docker0 left with another subnet's address and with interfaces attached
// (containers that live-restore kept running) gets a warning, not a
// failure: dockerd keeps it, and gives new containers, that old subnet
// (see bridgeWarning).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/agentd/agentd/internal/atomicfile"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/spf13/pflag"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 64
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// pollInterval is how often --wait looks for the subnet.env again.
const pollInterval = 200 * time.Millisecond

// options are the command-line settings.
type options struct {
	subnetFile   string
	output       string
	dockerConfig string
	bridge       string
	// dockerdArgs are the arguments after "--": dockerd's own, read only for
	// its --config-file.
	dockerdArgs []string
	wait        time.Duration
	poll        time.Duration
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, usage, err := parseFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "agentd-docker-opts: %v\n", err)
		return exitUsage
	}
	if usage != "" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	o.poll = pollInterval
	return execute(ctx, o, nil, stdout, stderr)
}

// execute does run's work with the options parsed. polled, if not nil, is
// called each time --wait found no subnet.env and is about to wait o.poll
// before looking again (for tests).
func execute(ctx context.Context, o options, polled func(), stdout, stderr io.Writer) int {
	config := o.dockerConfig
	if config != "" {
		// Arguments dockerd refuses are for dockerd to name; the check
		// looks at the file the ones before would give.
		config, _ = dockerdConfigFile(o.dockerdArgs, config)
	}
	if err := checkDockerConfig(config); err != nil {
		fmt.Fprintf(stderr, "agentd-docker-opts: %v\n", err)
		return exitFailure
	}
	if b := dockerdBridge(o.dockerdArgs); b != "" {
		fmt.Fprintf(stderr, "agentd-docker-opts: dockerd's arguments give --bridge=%q (DOCKER_OPTS, from /etc/default/docker or a drop-in): remove it there; dockerd gets --bip from this host's subnet.env and does not start with --bridge and --bip together\n", b)
		return exitFailure
	}
	// Before any wait, as the check above. The file is dockerd's command
	// line (the drop-in's EnvironmentFile, or a shell's ". file"): root's
	// own file in a directory another user can change is theirs to
	// replace once written (dockerd -H tcp://0.0.0.0:2375 is root for all).
	if o.output != "" {
		if err := atomicfile.CheckPath(o.output); err != nil {
			fmt.Fprintf(stderr, "agentd-docker-opts: --output: %v\n", err)
			return exitFailure
		}
	}
	env, err := readEnv(ctx, o, polled)
	if err != nil {
		fmt.Fprintf(stderr, "agentd-docker-opts: %v\n", err)
		return exitFailure
	}
	out := format(o.subnetFile, env)
	if o.output == "" {
		_, err = io.WriteString(stdout, out)
	} else {
		err = writeOutput(o.output, out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "agentd-docker-opts: %v\n", err)
		return exitFailure
	}
	if o.bridge != "" {
		if w := bridgeWarning(o.bridge, readBridge(o.bridge), env.Subnet); w != "" {
			fmt.Fprintf(stderr, "agentd-docker-opts: %s\n", w)
		}
	}
	return exitOK
}

// writeOutput writes out to path (--output) once path is checked again
// with its directory made: the check before the wait found every directory
// that existed then safe, but one missing then, in a sticky directory (/tmp),
// may have been made by another user while --wait waited. Checked before
// the directory is made too, so that nothing is made under a directory
// found unsafe. Once the directory exists and passes, no one else can
// change the way to path. A directory that cannot be made is left to
// atomicfile.Write to report, as before.
func writeOutput(path, out string) error {
	check := func() error {
		if err := atomicfile.CheckPath(path); err != nil {
			return fmt.Errorf("--output: %w", err)
		}
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	if os.MkdirAll(filepath.Dir(path), 0o755) == nil {
		if err := check(); err != nil {
			return err
		}
	}
	return atomicfile.Write(path, []byte(out), 0o644)
}

// parseFlags reads the command line into options. For --help it returns the
// help text instead. Arguments after "--" are dockerd's.
func parseFlags(args []string) (o options, usage string, err error) {
	var help bool
	fs := pflag.NewFlagSet("agentd-docker-opts", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.subnetFile, "subnet-file", "/run/flannel/subnet.env", "the subnet.env agentd writes")
	fs.StringVarP(&o.output, "output", "o", "", "write the result to this file atomically (default: stdout)")
	fs.DurationVar(&o.wait, "wait", 0, "wait up to this long for a complete subnet.env (0: read it once)")
	fs.StringVar(&o.dockerConfig, "docker-config", "/etc/docker/daemon.json", `dockerd's configuration file unless a --config-file among dockerd's arguments (after "--") names another: fail if it sets bip, mtu, ip-masq or bridge ("": do not look)`)
	fs.StringVar(&o.bridge, "bridge", "docker0", `dockerd's bridge: warn when it holds another subnet and has interfaces attached, which dockerd then keeps ("": do not look)`)
	fs.BoolVarP(&help, "help", "h", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		return o, "", err
	}
	if help {
		return o, fmt.Sprintf("Usage: agentd-docker-opts [flags] [-- dockerd's arguments]\n\nWrites dockerd's --bip, --mtu and --ip-masq from agentd's subnet.env.\n\nFlags:\n%s", fs.FlagUsages()), nil
	}
	args = fs.Args()
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		args, o.dockerdArgs = args[:dash], args[dash:]
	}
	if len(args) > 0 {
		return o, "", fmt.Errorf("unexpected argument %q", args[0])
	}
	if o.wait < 0 {
		return o, "", fmt.Errorf("invalid --wait %v: must not be negative", o.wait)
	}
	// Unlike --output's, --docker-config's and --bridge's, an empty value
	// means nothing here, and no file of that name ever appears: --wait
	// would wait out its whole time (10 minutes in the drop-in, at each
	// start). An unset variable in the drop-in gives it, such as
	// ${AGENTD_SUBNET_FILE}, which docker.service does not have.
	if o.subnetFile == "" {
		return o, "", errors.New(`--subnet-file is empty (an unset variable in the drop-in? docker.service does not read /etc/agentd/agentd.env): name the subnet.env agentd writes, /run/flannel/subnet.env unless agentd's --subnet-file or AGENTD_SUBNET_FILE says otherwise`)
	}
	return o, "", nil
}

// clashingKeys are the daemon.json settings dockerd will not start with
// beside the flags written here: a setting given both as a flag and in the
// file stops it ("the following directives are specified both as a flag and
// in the configuration file"), even with the same value, and "bridge" cannot
// go with --bip at all ("You specified -b & --bip, mutually exclusive
// options").
var clashingKeys = []string{"bip", "mtu", "ip-masq", "bridge"}

// dockerFlatOptions are the daemon.json keys whose object values dockerd
// keeps as they are (its flatOptions). Of any other key whose value is an
// object, dockerd compares the object's keys with its flags
// (configValuesSet): {"x":{"mtu":1400}} clashes with --mtu. "bridge" is
// checked against --bip on the settings dockerd decodes, where only a
// top-level "bridge" lands, and only a non-empty string sets one ("" and null
// leave docker0; another type fails dockerd's decoding, which names it).
var dockerFlatOptions = map[string]bool{"cluster-store-opts": true, "default-network-opts": true, "log-opts": true,
	"runtimes": true, "default-ulimits": true, "features": true, "builder": true}

// checkDockerConfig fails when dockerd's configuration file at path sets
// any of clashingKeys, naming them and the file: that dockerd would exit at
// once after this program succeeded, leaving the reason in its own log. A
// missing file (dockerd's default) or an empty path passes, and so does a
// file that no dockerd reads as a JSON object: dockerd names that problem
// itself. The file is read as each dockerd reads it (readDockerConfig,
// readDockerConfig20), and refused when either reading finds a clash; the
// two agree when both read the file. When only one does, the message also
// gives the other's reason to stop on the file, which is then dockerd's next
// complaint once the clash is gone.
func checkDockerConfig(path string) error {
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cannot read dockerd's configuration file: %w", err)
	}
	type reading struct {
		dockerd string
		file    map[string]any
		err     error
	}
	readings := [2]reading{{dockerd: "dockerd 23.0 and later"}, {dockerd: "dockerd 20.10 and earlier"}}
	readings[0].file, readings[0].err = readDockerConfig(b)
	readings[1].file, readings[1].err = readDockerConfig20(b)
	for i, r := range readings {
		set := dockerConfigClashes(r.file)
		if len(set) == 0 {
			continue
		}
		them := "it"
		if len(set) > 1 {
			them = "them"
		}
		var also string
		if other := readings[1-i]; other.err != nil {
			also = fmt.Sprintf("; %s stop on this file before that: %v", other.dockerd, other.err)
		}
		return fmt.Errorf("%s sets %s: remove %s there; dockerd gets --bip, --mtu and --ip-masq from this host's subnet.env and does not start with a setting given both as a flag and in its configuration file, nor with \"bridge\" and --bip together%s", path, strings.Join(set, ", "), them, also)
	}
	return nil
}

// readDockerConfig reads daemon.json b as dockerd 23.0 and later do
// (getConflictFreeConfiguration since moby #44770 and #44790, in 23.0 by
// #44777 and #44832): decoded by its byte order mark (UTF-8, UTF-16 LE,
// UTF-16 BE; none: UTF-8) with golang.org/x/text as dockerd decodes it, an
// error if the result is not valid UTF-8 (dockerd's own message, offset
// included: x/text counts the bytes it had taken, up to the file's end in
// files under 4 KiB, not the offset of the bad byte), trimmed of Unicode
// white space (U+00A0 too), then nothing (no settings) or a single JSON
// value, which must be an object or null. file is nil when it sets nothing.
func readDockerConfig(b []byte) (file map[string]any, err error) {
	b, n, err := transform.Bytes(transform.Chain(unicode.BOMOverride(transform.Nop), encoding.UTF8Validator), b)
	if err != nil {
		return nil, fmt.Errorf("failed to decode configuration JSON at offset %d: %w", n, err)
	}
	if b = bytes.TrimSpace(b); len(b) == 0 {
		return nil, nil
	}
	err = json.Unmarshal(b, &file)
	return file, err
}

// readDockerConfig20 reads daemon.json b as dockerd 20.10 (the last before
// 23.0) does: its bytes as they are, so that a byte order mark is not JSON
// ("invalid character 'ï' looking for beginning of value"; 'ÿ' or 'þ' for
// UTF-16), and bytes that are not UTF-8 inside a string are JSON's
// replacement character; the first JSON value only, what follows unread.
func readDockerConfig20(b []byte) (file map[string]any, err error) {
	err = json.NewDecoder(bytes.NewReader(b)).Decode(&file)
	return file, err
}

// dockerConfigClashes are the clashingKeys that file, as dockerd decoded
// it, sets, quoted: the keys of an object value that is not one of
// dockerFlatOptions taken as settings too, and "bridge" only when a
// non-empty string.
func dockerConfigClashes(file map[string]any) []string {
	flagKeys := map[string]bool{}
	for k, v := range file {
		if m, ok := v.(map[string]any); ok && !dockerFlatOptions[k] {
			for inner := range m {
				flagKeys[inner] = true
			}
			continue
		}
		flagKeys[k] = true
	}
	var set []string
	for _, k := range clashingKeys {
		if bridge, _ := file[k].(string); k == "bridge" && bridge != "" || k != "bridge" && flagKeys[k] {
			set = append(set, strconv.Quote(k))
		}
	}
	return set
}

// dockerdConfigFile is the configuration file dockerd reads when started
// with args: the value of the last --config-file, parsed as dockerd's pflag
// parses it (--config-file=F or --config-file F, not after "--"), or def
// when there is none; "" (--config-file=) is no file. Other flags are not
// known here: one without "=" is taken to consume the next argument unless
// that starts with "-". The error is pflag's for an argument dockerd would
// refuse too (such as --config-file with no value); file is then what the
// arguments before it gave.
func dockerdConfigFile(args []string, def string) (file string, err error) {
	fs := pflag.NewFlagSet("dockerd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.StringVar(&file, "config-file", def, "")
	err = fs.Parse(args)
	return file, err
}

// dockerdBridge is the bridge dockerd's arguments name (the last -b or
// --bridge, parsed as dockerd's pflag parses them), or "" when they name none
// or cannot be parsed (dockerd names that problem itself). dockerd does not
// start with a bridge of any name, "none" included, beside --bip ("You
// specified -b & --bip, mutually exclusive options"); an empty one is its
// default. Other flags are not known here, as in dockerdConfigFile.
func dockerdBridge(args []string) string {
	var bridge string
	fs := pflag.NewFlagSet("dockerd", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.ParseErrorsAllowlist.UnknownFlags = true
	fs.StringVarP(&bridge, "bridge", "b", "", "")
	if fs.Parse(args) != nil {
		return ""
	}
	return bridge
}

// bridgeState is what a bridge holds before dockerd starts.
type bridgeState struct {
	addrs []netip.Prefix // IPv4
	ports int            // interfaces attached
}

// readBridge reads the bridge name: its IPv4 addresses from the kernel, its
// ports from /sys/class/net/<name>/brif (the network namespace's where /sys
// was mounted, as on a host). A bridge that is not there (dockerd has not
// run since boot) or cannot be read is the zero state: what it feeds is
// advice, and dockerd reports a broken bridge itself.
func readBridge(name string) bridgeState {
	var st bridgeState
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return st
	}
	addrs, _ := ifi.Addrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			bits, _ := n.Mask.Size()
			st.addrs = append(st.addrs, netip.PrefixFrom(ip, bits))
		}
	}
	ports, _ := os.ReadDir(filepath.Join("/sys/class/net", name, "brif"))
	st.ports = len(ports)
	return st
}

// bridgeWarning is the warning for a bridge that dockerd, given
// --bip=subnet, will leave as it is, or "". dockerd (20.10, TestDockerSubnetMove)
// moves its bridge to a new --bip at start, unless containers that
// live-restore kept running are attached: it then keeps the bridge network,
// docker0's address and the subnet it gives new containers, and says
// nothing. Those containers show as the bridge's ports.
func bridgeWarning(name string, st bridgeState, subnet netip.Prefix) string {
	if st.ports == 0 || len(st.addrs) == 0 || slices.Contains(st.addrs, subnet) {
		return ""
	}
	old := make([]string, len(st.addrs))
	for i, a := range st.addrs {
		old[i] = a.String()
	}
	ports := "1 interface"
	if st.ports > 1 {
		ports = strconv.Itoa(st.ports) + " interfaces"
	}
	return fmt.Sprintf("warning: %s has %s, not this host's subnet %s, and %s attached (containers kept running by live-restore?): "+
		"with those, dockerd keeps %s and gives new containers addresses in the old subnet, which is another host's or none; "+
		"stop every container (docker stop $(docker ps -q)), then restart docker",
		name, strings.Join(old, ", "), subnet, ports, name)
}

// readEnv reads the subnet.env, retrying every o.poll until o.wait has passed
// while it is missing (at boot, until agentd holds a lease); polled, if not
// nil, is called before each wait. A file that is there but invalid or
// incomplete (subnetenv.ParseComplete) fails at once: agentd replaces the
// file atomically, so waiting would not mend it, and the error names the key
// at fault or the cut line.
func readEnv(ctx context.Context, o options, polled func()) (subnetenv.Env, error) {
	start := time.Now()
	deadline := start.Add(o.wait)
	for {
		env, err := subnetenv.ReadOwnedComplete(o.subnetFile)
		if err == nil {
			return env, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return subnetenv.Env{}, err
		}
		err = fmt.Errorf("%s does not exist: agentd writes it once it holds a lease (is agentd running? systemctl status agentd)", o.subnetFile)
		if !time.Now().Before(deadline) {
			if o.wait > 0 {
				err = fmt.Errorf("%w (waited %v)", err, o.wait)
			}
			return subnetenv.Env{}, err
		}
		if polled != nil {
			polled()
		}
		select {
		case <-ctx.Done():
			// Stopped early (SIGTERM: systemctl stop, or the unit's
			// TimeoutStartSec): the time it did wait, not --wait.
			return subnetenv.Env{}, fmt.Errorf("%w after %v of --wait=%v: %w", ctx.Err(), time.Since(start).Round(time.Second), o.wait, err)
		case <-time.After(o.poll):
		}
	}
}

// format renders the options file for env, read from path. A path with a
// line break (systemd ends a line of an environment file at '\n' or '\r') is
// written Go-quoted: as it is, its tail would be a line of its own, which
// systemd reads as an assignment (DOCKER_OPTS=…) or warns about. So is one
// ending in a backslash, with which systemd before v254 (Debian 12's 252)
// continues the comment onto the DOCKER_IP_MASQ line.
func format(path string, env subnetenv.Env) string {
	if strings.ContainsAny(path, "\n\r") || strings.HasSuffix(path, `\`) {
		path = strconv.Quote(path)
	}
	masq := !env.IPMasq
	return fmt.Sprintf("# written by agentd-docker-opts from %s\nDOCKER_IP_MASQ=%t\nDOCKER_NETWORK_OPTIONS=\"--bip=%s --mtu=%d --ip-masq=%t\"\n",
		path, masq, env.Subnet, env.MTU, masq)
}
