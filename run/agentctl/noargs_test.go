package main

import (
	"bytes"
	"context"
	"testing"
)

// TestNoArgsCommands: a command that takes no arguments says so, with the
// words given, exit 64. Before 2026-12-06 it said `unknown command "extra"
// for "agentctl leases"`, as if a subcommand had been mistyped. A group's
// unknown subcommand, and a command taking one argument given two, say
// what they said.
func TestNoArgsCommands(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"leases", "extra"}, `agentctl: "agentctl leases" takes no arguments, got "extra"` + "\n"},
		{[]string{"leases", "-o", "json", "extra", "more"}, `agentctl: "agentctl leases" takes no arguments, got "extra" "more"` + "\n"},
		{[]string{"status", "extra"}, `agentctl: "agentctl status" takes no arguments, got "extra"` + "\n"},
		{[]string{"config", "show", "extra"}, `agentctl: "agentctl config show" takes no arguments, got "extra"` + "\n"},
		{[]string{"version", "extra"}, `agentctl: "agentctl version" takes no arguments, got "extra"` + "\n"},
		{[]string{"config", "extra"}, `agentctl: unknown command "extra" for "agentctl config"` + "\n"},
		{[]string{"lease", "release", "10.244.5.0/24", "extra"}, "agentctl: accepts 1 arg(s), received 2\n"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut, nil); code != exitUsage || errOut.String() != tc.want || out.Len() != 0 {
			t.Errorf("agentctl %q: exit %d, said %q; want %d, %q", tc.args, code, errOut.String(), exitUsage, tc.want)
		}
	}
}
