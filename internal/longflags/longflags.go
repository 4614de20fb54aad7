// Package longflags lets a pflag command line take Go-style single-dash long
// flags (-etcd-endpoints=x, -iface eth0), which flanneld's users write, by
// rewriting them into pflag's double-dash form before parsing. agentd and
// agentctl share it, so both take the etcd flags the same way.
package longflags

import (
	"strings"

	"github.com/spf13/pflag"
)

// Normalize rewrites the single-dash long flags of args into pflag's
// double-dash form for the flags of fs. It leaves alone single-letter
// shorthands and their groups (-v=2, -v 2, -v2, -h), a lone "-", everything
// after "--", and any argument that is the value of the flag before it, even
// when that value starts with a dash (--etcd-password -secret). A single-dash
// name that is neither a flag of fs nor a group of its shorthands becomes a
// long flag, so that pflag reports it as "unknown flag: --name".
func Normalize(fs *pflag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); {
		var next []string
		next, i = Next(fs, args, i)
		out = append(out, next...)
	}
	return out
}

// Next is Normalize for one step of args, from index i: a flag with, if it
// takes the next argument as its value, that value; an argument that is not
// a flag as it is; or, at "--", the rest of args unchanged. It returns the
// arguments to use and the index after those it took. A caller whose flags
// change along the command line (cobra's subcommands) calls it with the
// flags that apply at i.
func Next(fs *pflag.FlagSet, args []string, i int) ([]string, int) {
	a := args[i]
	if a == "--" {
		return args[i:], len(args)
	}
	if len(a) < 2 || a[0] != '-' {
		return []string{a}, i + 1
	}
	var long string // the long flag's name, if a is a long flag
	if a[1] == '-' {
		long = a[2:]
	} else {
		body := a[1:]
		name, _, _ := strings.Cut(body, "=")
		if len(name) > 1 && (fs.Lookup(name) != nil || fs.ShorthandLookup(name[:1]) == nil) {
			a = "-" + a
			long = body
		} else if shorthandsWantValue(fs, body) && i+1 < len(args) {
			// The last shorthand of the group takes the next argument.
			return []string{a, args[i+1]}, i + 2
		}
	}
	if long != "" {
		name, _, hasValue := strings.Cut(long, "=")
		if f := fs.Lookup(name); f != nil && !hasValue && f.NoOptDefVal == "" && i+1 < len(args) {
			return []string{a, args[i+1]}, i + 2
		}
	}
	return []string{a}, i + 1
}

// shorthandsWantValue reports whether a shorthand group like "hv" (from -hv)
// ends in a flag that takes its value from the next argument.
func shorthandsWantValue(fs *pflag.FlagSet, group string) bool {
	for i := 0; i < len(group); i++ {
		f := fs.ShorthandLookup(group[i : i+1])
		if f == nil {
			return false // pflag will report the unknown shorthand
		}
		if f.NoOptDefVal == "" {
			// Takes a value: attached (-v2, -v=2) or the next argument.
			return i == len(group)-1
		}
	}
	return false
}
