package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
)

// TestRunLogsEscaped: agentd as run sets it up logs a text holding a
// newline with its control and format characters escaped (logSafe over
// klog's logger), as TestLogEscapesTextFromEtcd shows of logSafe alone:
// here agent.Run fails on a --state-dir whose name holds a newline, ESC,
// BEL and U+202E, where a file stands, and run logs why.
func TestRunLogsEscaped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state\n\x1b]0;owned\a\u202e")
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	code, out := runHelper(t, "agentd", "--state-dir="+dir)
	want := "\"agentd failed\" err=<\n\tstate dir: mkdir " + filepath.Dir(dir) + "/state\n\t\\x1b]0;owned\\a\\u202e: not a directory\n >"
	if code != exitFailure || !strings.Contains(out, want) {
		// Quoted: a regression would write ESC and U+202E to the terminal.
		t.Errorf("exit %d, output\n%q\nwant exit %d and\n%q", code, out, exitFailure, want)
	}
	if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && r != '\t' && !unicode.IsGraphic(r) }); i >= 0 {
		t.Errorf("the log holds %U:\n%q", []rune(out[i:])[0], out)
	}
}
