package main

import (
	"strings"
	"testing"
)

// FuzzDockerdConfigFile: wherever pflag accepts dockerd's arguments,
// dockerdConfigFile gives what a plain reading of them does: the value of
// the last "--config-file=F", or of "--config-file" and the argument after
// it, before the first "--" that is not such a value; the default without
// one. Arguments pflag refuses (dockerd, which parses with pflag, refuses
// them too) give a one-line error.
//
// args is split at newlines into arguments.
func FuzzDockerdConfigFile(f *testing.F) {
	for _, s := range []string{"", "--config-file=/etc/docker/custom.json", "-D\n--config-file\n/etc/docker/custom.json",
		"--config-file\n--\n--config-file=/y", "--\n--config-file=/x", "--label\n--config-file=/x", "-H\nfd://\n--config-file=",
		"--config-file", "-h", "---config-file=/x", "--config-file=/a\n--log-level\nwarn\n--config-file=/b", "-Dl\ndebug\n--config-file\n-x"} {
		f.Add(s)
	}
	const def = "/etc/docker/daemon.json"
	f.Fuzz(func(t *testing.T, argText string) {
		var args []string
		if argText != "" {
			args = strings.Split(argText, "\n")
		}
		got, err := dockerdConfigFile(args, def)
		if err != nil {
			if msg := err.Error(); msg == "" || strings.Contains(msg, "\n") {
				t.Fatalf("dockerdConfigFile(%q): error %q, want one non-empty line", args, msg)
			}
			return
		}
		want := def
		for i := 0; i < len(args) && args[i] != "--"; i++ {
			if v, ok := strings.CutPrefix(args[i], "--config-file="); ok {
				want = v
			} else if args[i] == "--config-file" && i+1 < len(args) {
				want = args[i+1]
				i++
			}
		}
		if got != want {
			t.Fatalf("dockerdConfigFile(%q) = %q, want %q", args, got, want)
		}
	})
}
