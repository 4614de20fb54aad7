// Command agentctl is the operator's view of an agentd network: it writes and
// shows the network config, lists, reserves and releases leases in etcd, and
// asks a host's agent for its status.
//
//	agentctl config init --network 10.244.0.0/16 --backend vxlan
//	agentctl leases
//	agentctl lease reserve 10.244.7.0/24 --public-ip 192.0.2.10
//	agentctl status --agent http://127.0.0.1:8471
//
// Exit status: 0 success, 1 failure, 64 bad usage (EX_USAGE of sysexits.h, as
// agentd's; not 2, which the Go runtime gives a panic).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/internal/longflags"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var version = "dev"

// exitUsage is the status of a mistake on the command line.
const exitUsage = 64

// exitNotReady is the status of `status` when the agent answered but is not
// ready (as systemctl status exits 3 for a unit that is not active), so
// that scripts can wait with `until agentctl status; do …`.
const exitNotReady = 3

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, nil))
}

// usageError marks a mistake on the command line (exit status exitUsage). Errors
// are marked where they arise: usagef in our commands, and for cobra's own
// checks the flag error function, usageArgs around every Args validator and
// validateFlags for required flags. Any other error is a failure (1),
// whatever its text says.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// etcdDialer makes the etcd client, waiting up to timeout for etcd to
// authenticate the user if one is given, and do, which runs a command's
// requests until timeout has passed since the dialer was called, so that
// --timeout bounds the login and the requests together
// (agent.EtcdClient.Do: it explains their failure); tests replace it with
// one that dials into their network namespace.
type etcdDialer func(cfg *agent.Config, timeout time.Duration) (cli *clientv3.Client, do etcdDo, closeFn func(), err error)

type etcdDo func(ctx context.Context, timeout time.Duration, f func(context.Context) error) error

func dialEtcd(cfg *agent.Config, timeout time.Duration) (*clientv3.Client, etcdDo, func(), error) {
	c, err := agent.NewEtcdClient(cfg, timeout)
	if err != nil {
		return nil, nil, nil, err
	}
	return c.Client, c.Do, func() { c.Close() }, nil
}

// app is one invocation's settings and outputs.
type app struct {
	etcd      agent.Config
	timeout   time.Duration
	out       io.Writer
	errOut    io.Writer // warnings
	dial      etcdDialer
	lookupEnv func(string) (string, bool)
	// http asks the agent's health server (status); tests replace it.
	http *http.Client
	// now and loc are the reader's clock and time zone: status shows the
	// agent's times in loc, and their age by now.
	now func() time.Time
	loc *time.Location
	// source names the variable each etcd flag set from the environment
	// came from, for error messages.
	source map[string]string
}

// run executes one command line and returns the exit status. dial nil means
// the real etcd client.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, dial etcdDialer) int {
	return runWith(ctx, args, stdout, stderr, dial, agentClient())
}

// runWith is run asking the agent's health server with hc.
func runWith(ctx context.Context, args []string, stdout, stderr io.Writer, dial etcdDialer, hc *http.Client) int {
	if dial == nil {
		dial = dialEtcd
	}
	a := &app{etcd: agent.DefaultConfig(), out: stdout, errOut: stderr, dial: dial, lookupEnv: os.LookupEnv, source: map[string]string{}, http: hc,
		now: time.Now, loc: time.Local}
	root := a.rootCommand()
	// Before cobra adds its completion command (strictCompletion,
	// longFlags), which writes its scripts where root wrote then.
	root.SetOut(stdout)
	root.SetErr(stderr)
	strictCompletion(root)
	strictHelp(root)
	root.SetArgs(longFlags(root, args))
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	// Errors quote what etcd and the agent hold: a lease's backend type, a
	// key's name.
	fmt.Fprintf(stderr, "agentctl: %s\n", printable(err.Error()))
	var u usageError
	if errors.As(err, &u) {
		return exitUsage
	}
	if errors.Is(err, errNotReady) {
		return exitNotReady
	}
	return 1
}

// usageArgs marks the errors of a cobra Args validator as usage errors. A
// command that takes no arguments (validate refuses one but takes none:
// cobra.NoArgs) says so: cobra.NoArgs says `unknown command "extra" for
// "agentctl leases"`, as if a subcommand had been mistyped.
func usageArgs(validate cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		err := validate(cmd, args)
		switch {
		case err == nil:
			return nil
		case len(args) > 0 && !cmd.HasSubCommands() && validate(cmd, nil) == nil && validate(cmd, args[:1]) != nil:
			return usagef("%q takes no arguments, got %s", cmd.CommandPath(), quoteAll(args))
		}
		return usageError{err}
	}
}

// quoteAll is args quoted and joined by spaces: "a" "b c".
func quoteAll(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = strconv.Quote(a)
	}
	return strings.Join(q, " ")
}

// validateFlags runs cobra's checks of required and grouped flags early, so
// that their errors are marked as usage errors (cobra runs them again, after
// the pre-run hooks, and finds nothing).
func validateFlags(cmd *cobra.Command) error {
	if err := cmd.ValidateRequiredFlags(); err != nil {
		return usageError{err}
	}
	if err := cmd.ValidateFlagGroups(); err != nil {
		return usageError{err}
	}
	return nil
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "agentctl",
		Short: "Manage an agentd (flannel-compatible) overlay network kept in etcd",
		Long: `agentctl writes and shows the network config, lists, reserves and releases
subnet leases in etcd, and shows a host agent's status. It reads and writes
flannel's etcd v3 schema.

The etcd flags are agentd's, and like agentd it reads them from AGENTD_<FLAG>
or FLANNELD_<FLAG> environment variables when not given (e.g.
FLANNELD_ETCD_ENDPOINTS).`,
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		// The root's own Args and Run keep cobra from checking for an
		// unknown command itself (its error would be unmarked); alone,
		// agentctl prints its help.
		Args: groupArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			// Before flagsFromEnv, which marks the flags it sets as
			// changed. A command line is every local user's to read
			// (/proc/<pid>/cmdline, ps -ef); the environment only root's.
			if f := cmd.Flags().Lookup("etcd-password"); f != nil && f.Changed && f.Value.String() != "" {
				fmt.Fprintln(cmd.ErrOrStderr(), "agentctl: warning: "+passwordOnCommandLine)
			}
			if err := flagsFromEnv(cmd.Flags(), a.lookupEnv, a.source); err != nil {
				return err
			}
			if err := validateFlags(cmd); err != nil {
				return err
			}
			if a.timeout <= 0 {
				return usagef("--timeout %v: want a positive duration", a.timeout)
			}
			return nil
		},
	}
	// "agentctl v1.2.3", as agentd --version prints "agentd v1.2.3"
	// (cobra's own: "agentctl version v1.2.3"); agentctl version too.
	root.SetVersionTemplate("agentctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.Var(&endpointList{eps: &a.etcd.EtcdEndpoints}, "etcd-endpoints", "comma-separated etcd endpoints: URLs (http, https, unix, unixs) or host:port, as agentd takes them")
	pf.StringVar(&a.etcd.EtcdPrefix, "etcd-prefix", a.etcd.EtcdPrefix, "etcd key prefix of the network")
	pf.StringVar(&a.etcd.EtcdCAFile, "etcd-cafile", "", "CA certificate file to verify etcd's TLS certificate")
	pf.StringVar(&a.etcd.EtcdCertFile, "etcd-certfile", "", "client certificate file for etcd TLS")
	pf.StringVar(&a.etcd.EtcdKeyFile, "etcd-keyfile", "", "client key file for etcd TLS")
	pf.StringVar(&a.etcd.EtcdUsername, "etcd-username", "", "etcd user name")
	pf.StringVar(&a.etcd.EtcdPassword, "etcd-password", "", "etcd password")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "how long to wait for etcd (its login and the command's requests together) or the agent (if etcd does not answer, up to 5s more to find out why)")

	root.AddCommand(a.configCommand(), a.leasesCommand(), a.leaseCommand(), a.statusCommand(), a.versionCommand())
	return root
}

// passwordOnCommandLine is the warning for --etcd-password given on the
// command line, as agentd's.
const passwordOnCommandLine = "--etcd-password is on the command line, which every local user can read (ps -ef, /proc/<pid>/cmdline): " +
	"give it as AGENTD_ETCD_PASSWORD in the environment instead (on a host installed with agentd.service, " +
	"set -a; . /etc/agentd/agentd.env; set +a gives agentctl the agent's etcd settings)"

// groupArgs and groupRun make a command that only groups subcommands reject
// an unknown subcommand, and one given none, as usage errors (cobra would
// print the help and succeed).
func groupArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.SuggestionsMinimumDistance <= 0 {
			cmd.SuggestionsMinimumDistance = 2 // cobra's default for its own message
		}
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			return usagef("unknown command %q for %q (did you mean %q?)", args[0], cmd.CommandPath(), s[0])
		}
		return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
	}
	return nil
}

func groupRun(cmd *cobra.Command, _ []string) error {
	return usagef("%s needs a subcommand (see %s --help)", cmd.CommandPath(), cmd.CommandPath())
}

// strictCompletion adds cobra's completion command to root, judging its
// arguments as the other groups do: cobra's own printed its help and
// succeeded for a shell it has no script for (agentctl completion tcsh) or
// for none.
func strictCompletion(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	for _, cmd := range root.Commands() {
		if cmd.Name() == "completion" {
			cmd.Args, cmd.RunE = groupArgs, groupRun
		}
	}
}

// strictHelp makes `agentctl help <command>` refuse a command that does not
// exist as the command line itself does (groupArgs): cobra's help command
// printed the nearest group's help and succeeded for `help frob` or
// `help config frob`. Words after a command without subcommands are its
// arguments (help lease reserve 10.244.7.0/24), which help ignores, as
// cobra's does.
func strictHelp(root *cobra.Command) {
	root.InitDefaultHelpCmd()
	for _, cmd := range root.Commands() {
		if cmd.Name() != "help" {
			continue
		}
		help := cmd.Run
		cmd.RunE = func(c *cobra.Command, args []string) error {
			target, rest, err := root.Find(args)
			if err != nil {
				return usageError{err}
			}
			if len(rest) > 0 && target.HasSubCommands() {
				return groupArgs(target, rest)
			}
			help(c, args)
			return nil
		}
	}
}

// endpointList is --etcd-endpoints: split at commas, as agentd splits it,
// and added to when given again. pflag's StringSlice reads its value as CSV,
// whose error (a '"' in a password) quotes the whole value, password and
// all, before ValidateEtcd can judge and redact it.
type endpointList struct {
	eps *[]string
	set bool // the first value given replaces the default
}

func (l *endpointList) Set(s string) error {
	if !l.set {
		*l.eps, l.set = nil, true
	}
	*l.eps = append(*l.eps, strings.Split(s, ",")...)
	return nil
}

func (l *endpointList) Type() string { return "strings" }

func (l *endpointList) String() string { return "[" + strings.Join(*l.eps, ",") + "]" }

// envFlags are the flags read from the environment: the etcd connection
// flags, which agentctl shares with agentd, so that the variables that
// connect a host's agent connect agentctl too. A command's own flags never
// come from the environment: a FLANNELD_PUBLIC_IP or AGENTD_FORCE meant for
// an agent (or left in a shell) must not change what a command does.
var envFlags = []string{"etcd-endpoints", "etcd-prefix", "etcd-cafile", "etcd-certfile", "etcd-keyfile", "etcd-username", "etcd-password"}

// flagsFromEnv sets each of envFlags in fs not given on the command line from
// AGENTD_<FLAG>, else FLANNELD_<FLAG>, as agentd does; empty variables count
// as unset. It records in source (unless nil) the variable each flag came
// from.
func flagsFromEnv(fs *pflag.FlagSet, lookupEnv func(string) (string, bool), source map[string]string) error {
	for _, flag := range envFlags {
		f := fs.Lookup(flag)
		if f == nil || f.Changed {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		for _, p := range []string{"AGENTD_", "FLANNELD_"} {
			v, ok := lookupEnv(p + name)
			if !ok || v == "" {
				continue
			}
			if err := fs.Set(flag, v); err != nil {
				return usagef("%s%s=%q: %v", p, name, v, err)
			}
			if source != nil {
				source[flag] = p + name
			}
			break
		}
	}
	return nil
}

// validateEtcd judges the etcd flags as agentd does (agent's ValidateEtcd,
// with the endpoints' spaces trimmed and empty entries, a comma too many,
// skipped as agentd skips them) before anything is dialled. Its error is a
// usage error that names the flag, or the variable the value came from.
func (a *app) validateEtcd() error {
	var eps []string
	for _, ep := range a.etcd.EtcdEndpoints {
		if ep = strings.TrimSpace(ep); ep != "" {
			eps = append(eps, ep)
		}
	}
	if len(eps) > 0 {
		a.etcd.EtcdEndpoints = eps
	}
	err := a.etcd.ValidateEtcd()
	var ce *agent.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	where := "--" + ce.Flag
	if v, ok := a.source[ce.Flag]; ok {
		where = v
	}
	return usagef("invalid %s %q: %v", where, ce.Value, ce.Err)
}

// longFlags rewrites the single-dash long flags of args (-etcd-endpoints=…,
// as agentd and flanneld take them) into cobra's double-dash form. Each
// argument is judged by the flags of the command it falls under, as cobra
// finds it: the root's, and from a subcommand's name on that subcommand's
// own and inherited flags. A request for shell completions is left as it is.
func longFlags(root *cobra.Command, args []string) []string {
	if len(args) > 0 && (args[0] == cobra.ShellCompRequestCmd || args[0] == cobra.ShellCompNoDescRequestCmd) {
		return args
	}
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	cmd, descend := root, true
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); {
		if a := args[i]; descend && (len(a) < 2 || a[0] != '-') {
			// cobra takes the first argument that is not a flag as a
			// subcommand's name, if one has it, and stops at the first
			// that is not.
			descend = false
			for _, sub := range cmd.Commands() {
				if sub.Name() == a || sub.HasAlias(a) {
					cmd, descend = sub, true
					break
				}
			}
		}
		cmd.InitDefaultHelpFlag()
		cmd.InitDefaultVersionFlag()
		cmd.InheritedFlags() // merges the parents' persistent flags into cmd.Flags()
		var next []string
		next, i = longflags.Next(cmd.Flags(), args, i)
		out = append(out, next...)
	}
	return out
}

// withEtcd runs f with an etcd client and a deadline; a timeout is explained
// (unreachable endpoint, TLS failure) rather than reported as a bare
// deadline, and a TLS failure ends f at once.
func (a *app) withEtcd(ctx context.Context, f func(ctx context.Context, cli *clientv3.Client) error) error {
	if err := a.validateEtcd(); err != nil {
		return err
	}
	// The TLS files agentd warns of at its start (the same files,
	// usually): whoever could change them chooses the etcd that agentctl
	// trusts, or whom it acts as there. Said by the commands that use
	// etcd only.
	for _, w := range agent.EtcdTLSFileWarnings(&a.etcd) {
		fmt.Fprintln(a.errOut, "agentctl: warning: "+w.String())
	}
	cli, do, closeFn, err := a.dial(&a.etcd, a.timeout)
	if err != nil {
		return err
	}
	defer closeFn()
	return do(ctx, a.timeout, func(ctx context.Context) error { return f(ctx, cli) })
}
