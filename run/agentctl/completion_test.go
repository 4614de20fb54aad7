package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCompletionMistakes: agentctl completion for a shell it has no script
// for, or with no shell, printed the completion help and exited 0, where
// every other mistake is one line and status 64 (a setup script writing
// `agentctl completion tcsh > …` got the help as its script). The four
// shells still give their scripts.
func TestCompletionMistakes(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"completion", "tcsh"}, `unknown command "tcsh" for "agentctl completion"`},
		{[]string{"completion", "bsh"}, `(did you mean "bash"?)`},
		{[]string{"completion"}, "agentctl completion needs a subcommand"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errOut, nil)
		if code != exitUsage || out.Len() != 0 || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("agentctl %s: exit %d, want %d with one line saying %q\nstdout: %.200s\nstderr: %s",
				strings.Join(tc.args, " "), code, exitUsage, tc.want, out.String(), errOut.String())
		}
	}
	for _, shell := range []string{"bash", "zsh", "fish", "powershell"} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), []string{"completion", shell}, &out, &errOut, nil); code != 0 || !strings.Contains(out.String(), "agentctl") || errOut.Len() != 0 {
			t.Errorf("agentctl completion %s: exit %d, %d bytes out, stderr %q", shell, code, out.Len(), errOut.String())
		}
	}
}
