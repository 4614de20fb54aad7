package main

import (
	"bytes"
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"k8s.io/klog/v2"
)

// etcdText is a key's name as anyone with write access to etcd can write
// it: a newline, a line made to look like klog's, an escape sequence (here
// a window title), the C1 control CSI, and U+202E, after which a terminal
// that shows bidirectional text shows the rest of the line backwards.
const etcdText = "/coreos.com/network/subnets/10.244.6.0-24\nI1207 10:00:00.000000 1 lease.go:1] \"lease acquired\"\x1b]0;owned\x07\u009b2J\u202e"

type multiLine struct{}

func (multiLine) String() string { return "a\nb\u202e" }

// TestLogEscapesTextFromEtcd: agentd's logger (the one run puts in
// agent.Run's context, named as agent.Run names it) escapes the control and format
// characters in a text value holding a newline (\x1b, \a, \u009b,
// \u202e), whether it is a string, an error (log.Error's too) or a
// Stringer, as Go quotes them; klog writes its lines as it wrote them, each
// after a tab, and names the caller's line. A value without a newline is
// written as klog writes it, quoted. Before, klog wrote the lines as they
// are, escape sequence, CSI and U+202E included.
func TestLogEscapesTextFromEtcd(t *testing.T) {
	var out bytes.Buffer
	logToBuffer(t, &out)

	log := klog.FromContext(withSafeLog(context.Background())).WithName("agent")
	err := fmt.Errorf("lease value of %s: %w", etcdText, context.Canceled)
	log.Error(err, "skipping key that is not a usable lease", "key", etcdText, "revision", 7)
	_, _, line, _ := runtime.Caller(0)
	log.WithValues("peer", etcdText).Info("peer lease added", "backend", "vxlan\u202e", "hostID", multiLine{}, "err", errors.New("x\ny"))
	klog.Flush()

	text := out.String()
	if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && r != '\t' && !unicode.IsGraphic(r) }); i >= 0 {
		t.Errorf("the log holds %U:\n%q", []rune(text[i:])[0], text)
	}
	const key = "\t/coreos.com/network/subnets/10.244.6.0-24\n" +
		"\tI1207 10:00:00.000000 1 lease.go:1] \"lease acquired\"\\x1b]0;owned\\a\\u009b2J\\u202e"
	want := fmt.Sprintf("logsafe_test.go:%d] \"skipping key that is not a usable lease\" err=<\n", line-1) +
		"\tlease value of /coreos.com/network/subnets/10.244.6.0-24\n" +
		"\tI1207 10:00:00.000000 1 lease.go:1] \"lease acquired\"\\x1b]0;owned\\a\\u009b2J\\u202e: context canceled\n" +
		" > logger=\"agent\" key=<\n" + key + "\n > revision=7\n" +
		fmt.Sprintf("logsafe_test.go:%d] \"peer lease added\" logger=\"agent\" peer=<\n", line+1) + key + "\n" +
		" > backend=\"vxlan\\u202e\" hostID=<\n\ta\n\tb\\u202e\n > err=<\n\tx\n\ty\n >\n"
	// Without klog's headers ("E1207 11:16:04.908687    4599 ").
	if got := regexp.MustCompile(`(?m)^[IE]\d{4} [\d:.]+ +\d+ `).ReplaceAllString(text, ""); got != want {
		// Quoted: a regression would write ESC and U+202E to the terminal.
		t.Errorf("the log is\n%q\nwant\n%q", got, want)
	}
	if !errors.Is(escapedError{err: err}, context.Canceled) {
		t.Error("errors.Is does not see through escapedError")
	}
}

// logToBuffer sends klog's output to out, each line once and not to
// stderr, until t ends.
func logToBuffer(t *testing.T, out *bytes.Buffer) {
	fs := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "one_output": "true", "stderrthreshold": "FATAL"} {
		if err := fs.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	klog.SetOutput(out)
	t.Cleanup(func() {
		klog.Flush()
		for k, v := range map[string]string{"logtostderr": "true", "one_output": "false", "stderrthreshold": "ERROR"} {
			fs.Set(k, v)
		}
	})
}

// FuzzEscapeLines: whatever text agentd logs, escapeLines leaves one
// without a newline as it is (klog quotes it), and makes of one with a
// newline valid UTF-8 with as many newlines and no other rune that is not
// graphic, which klog writes as it is.
func FuzzEscapeLines(f *testing.F) {
	for _, s := range []string{etcdText, "a\nb", "x\x9b\ny\t\r\u2028\u2029\ufeff\U000e0041", "no newline \x1b[2J\u202e", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := escapeLines(s)
		if !strings.Contains(s, "\n") {
			if e != s {
				t.Fatalf("escapeLines(%q) = %q, want it as it is", s, e)
			}
			return
		}
		if !utf8.ValidString(e) || strings.Count(e, "\n") != strings.Count(s, "\n") {
			t.Fatalf("escapeLines(%q) = %q: not UTF-8, or another count of newlines", s, e)
		}
		if i := strings.IndexFunc(e, func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }); i >= 0 {
			t.Fatalf("escapeLines(%q) = %q, which holds %U", s, e, []rune(e[i:])[0])
		}
	})
}
