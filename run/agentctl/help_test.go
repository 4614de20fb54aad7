package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpUnknownCommand: `agentctl help frob` printed agentctl's help and
// exited 0 (and `help config frob` the config group's), where the command
// line `agentctl frob` is one line and status 64. The help of commands that
// exist is still printed, and words after a command without subcommands
// are its arguments, as cobra's help takes them.
func TestHelpUnknownCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help", "frob"}, `unknown command "frob" for "agentctl"`},
		{[]string{"help", "lesaes"}, `unknown command "lesaes" for "agentctl" (did you mean "leases"?)`},
		{[]string{"help", "config", "frob"}, `unknown command "frob" for "agentctl config"`},
		{[]string{"help", "lease", "frob", "reserve"}, `unknown command "frob" for "agentctl lease"`},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut, nil)
		if code != exitUsage || out.Len() != 0 || errOut.String() != "agentctl: "+tc.want+"\n" {
			t.Errorf("agentctl %s: exit %d, want %d with the one line %q\nstdout: %.200s\nstderr: %s",
				strings.Join(tc.args, " "), code, exitUsage, tc.want, out.String(), errOut.String())
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"help"}, "agentctl writes and shows the network config"},
		{[]string{"help", "leases"}, "agentctl leases"},
		{[]string{"help", "config"}, "agentctl config"},
		{[]string{"help", "lease", "reserve", "10.244.7.0/24"}, "agentctl lease reserve"},
		{[]string{"help", "completion", "bash"}, "agentctl completion bash"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut, nil); code != 0 || !strings.Contains(out.String(), tc.want) || errOut.Len() != 0 {
			t.Errorf("agentctl %s: exit %d, want 0 with help saying %q\nstdout: %.300s\nstderr: %s",
				strings.Join(tc.args, " "), code, tc.want, out.String(), errOut.String())
		}
	}
}
