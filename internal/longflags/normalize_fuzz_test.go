package longflags

import (
	goflag "flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

// longFlags registers, on a Go flag set or a pflag one, the same long
// flags, one of each kind agentd has, and none a single letter long; it
// returns a printout of their values.
func longFlags(str func(name string) *string, boolean func(name string) *bool, integer func(name string) *int,
	duration func(name string) *time.Duration) func() string {
	ep, iface := str("etcd-endpoints"), str("iface")
	masq := boolean("ip-masq")
	port := integer("healthz-port")
	ttl := duration("subnet-lease-ttl")
	return func() string {
		return strings.Join([]string{*ep, *iface, strings.Repeat("t", boolInt(*masq)), strings.Repeat("p", *port%7), ttl.String()}, "\x00")
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// FuzzNormalize: agentd and agentctl read every command line through
// Normalize. For any arguments (split at newlines):
//
//   - Normalize gives as many arguments, each the one given or, for a
//     single-dash one, it with a second dash; nothing after a "--" that
//     ends the flags changes;
//     and normalizing again changes nothing, with or without shorthands;
//   - with long flags only, pflag reads the normalized command line as Go's
//     flag package, whose single-dash long flags Normalize exists to take,
//     reads the one given, when Go's reads it without an error: the same
//     values, and as many arguments left over (pflag stopping at the first
//     argument that is not a flag, as Go's does; Normalize, for agentd's
//     flags after its arguments, rewrites those too); and where Go's finds
//     an unknown flag, pflag finds the same one, as a long flag.
func FuzzNormalize(f *testing.F) {
	for _, s := range []string{
		"-etcd-endpoints\nhttp://198.18.0.254:2379\n-iface=eth0\n-ip-masq",
		"-etcd-endpoints=x\n-ip-masq\nsub",
		"-etcd-endpoints\n-x\n-ip-masq=false\n--healthz-port=0x10",
		"-v\n2\n-v2\n-v=2\n-hv\n3\n-h",
		"-vmodule=x",
		"-unknown\nx",
		"-\n--\n-etcd-endpoints\nx",
		"-etcd-endpoints",
		"--iface\n-\n-subnet-lease-ttl\n1m30s\n--\n-ip-masq",
		"-ip-masq\nfalse\n-iface=a",
		"---iface=x",
		"-=x",
		"-iface\n--\n-subnet-lease-ttl\n1s",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		args := strings.Split(text, "\n")

		// Shape and idempotence, with agentd's shorthands (-v takes a
		// value, -h does not) beside the long flags.
		short := pflag.NewFlagSet("short", pflag.ContinueOnError)
		longFlags(func(n string) *string { return short.String(n, "", "") }, func(n string) *bool { return short.Bool(n, false, "") },
			func(n string) *int { return short.Int(n, 0, "") }, func(n string) *time.Duration { return short.Duration(n, 0, "") })
		short.IntP("v", "v", 0, "")
		short.BoolP("help", "h", false, "")
		for _, fs := range []*pflag.FlagSet{short, longOnly()} {
			out := Normalize(fs, args)
			if len(out) != len(args) {
				t.Fatalf("Normalize(%q) = %q: %d arguments, want %d", args, out, len(out), len(args))
			}
			// A "--" after an argument that is not a flag is no flag's
			// value: the end of the flags.
			end := -1
			for i, a := range args {
				if a == "--" && (i == 0 || !strings.HasPrefix(args[i-1], "-")) {
					end = i
					break
				}
			}
			for i := range out {
				if out[i] != args[i] && (out[i] != "-"+args[i] || strings.HasPrefix(args[i], "--") || end >= 0 && i > end) {
					t.Fatalf("Normalize(%q) = %q: argument %d %q became %q", args, out, i, args[i], out[i])
				}
			}
			if again := Normalize(fs, out); !slices.Equal(again, out) {
				t.Fatalf("Normalize(%q) = %q, normalized again %q", args, out, again)
			}
		}

		// Long flags only: the same reading as Go's flag package.
		g := goflag.NewFlagSet("go", goflag.ContinueOnError)
		g.SetOutput(io.Discard)
		gotGo := longFlags(func(n string) *string { return g.String(n, "", "") }, func(n string) *bool { return g.Bool(n, false, "") },
			func(n string) *int { return g.Int(n, 0, "") }, func(n string) *time.Duration { return g.Duration(n, 0, "") })
		p := pflag.NewFlagSet("p", pflag.ContinueOnError)
		p.SetOutput(io.Discard)
		p.SetInterspersed(false)
		gotP := longFlags(func(n string) *string { return p.String(n, "", "") }, func(n string) *bool { return p.Bool(n, false, "") },
			func(n string) *int { return p.Int(n, 0, "") }, func(n string) *time.Duration { return p.Duration(n, 0, "") })
		out := Normalize(p, args)
		if err := g.Parse(args); err != nil {
			// An unknown single-dash long flag is one for pflag too, and
			// named so: "unknown flag: --name", not a shorthand.
			name, unknown := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
			if unknown && len(name) > 1 {
				if perr := p.Parse(out); perr == nil || perr.Error() != "unknown flag: --"+name {
					t.Fatalf("Go's flag package, given %q: %v; pflag, given %q: %v, want unknown flag: --%s", args, err, out, perr, name)
				}
			}
			return
		}
		if err := p.Parse(out); err != nil {
			t.Fatalf("Go's flag package reads %q; pflag, given %q: %v", args, out, err)
		}
		if gotGo() != gotP() || len(g.Args()) != len(p.Args()) {
			t.Fatalf("%q: Go's flag package reads %q, leaving %q; pflag, given %q, reads %q, leaving %q",
				args, gotGo(), g.Args(), out, gotP(), p.Args())
		}
	})
}

// longOnly is a pflag set of longFlags alone.
func longOnly() *pflag.FlagSet {
	fs := pflag.NewFlagSet("long", pflag.ContinueOnError)
	longFlags(func(n string) *string { return fs.String(n, "", "") }, func(n string) *bool { return fs.Bool(n, false, "") },
		func(n string) *int { return fs.Int(n, 0, "") }, func(n string) *time.Duration { return fs.Duration(n, 0, "") })
	return fs
}
