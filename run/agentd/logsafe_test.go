package main

import (
	"bytes"
	"context"
	"errors"
	goflag "flag"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"unicode"

	"k8s.io/klog/v2"
)

// etcdText is a key's name as anyone with write access to etcd can write
// it: a newline, then an escape sequence (here a window title), the C1
// control CSI, and U+202E, after which a terminal that shows bidirectional
// text shows the rest of the line backwards.
const etcdText = "/coreos.com/network/subnets/10.244.6.0-24\nI1207 10:00:00.000000 1 lease.go:1] \"lease acquired\"\x1b]0;owned\x07\u009b2J\u202e"

type multiLine struct{}

func (multiLine) String() string { return "a\nb\u202e" }

// TestLogQuotesTextFromEtcd: agentd's logger (logSafe over klog's, as run
// sets it up, named as agent.Run names it) writes a text value holding a
// newline on its line, quoted as Go quotes it (\n, \x1b, \u009b, \u202e),
// as klog writes one without a newline, whether it is a string, an error
// (log.Error's too) or a Stringer, and names the caller's line. Before,
// klog wrote such a value's lines as they are, escape sequence and U+202E
// included, each after a tab, the forged "lease acquired" line among them.
func TestLogQuotesTextFromEtcd(t *testing.T) {
	var out bytes.Buffer
	logToBuffer(t, &out)

	log := klog.FromContext(klog.NewContext(context.Background(), logSafe(klog.Background()))).WithName("agent")
	err := fmt.Errorf("lease value of %s: %w", etcdText, context.Canceled)
	log.Error(err, "skipping key that is not a usable lease", "key", etcdText, "revision", 7)
	_, _, line, _ := runtime.Caller(0)
	log.WithValues("peer", etcdText).Info("peer lease added", "backend", "vxlan", "hostID", multiLine{}, "err", errors.New("x\ny"))
	klog.Flush()

	text := out.String()
	if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && !unicode.IsGraphic(r) }); i >= 0 {
		t.Errorf("the log holds %U:\n%q", []rune(text[i:])[0], text)
	}
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	quoted := fmt.Sprintf("%q", etcdText)
	for i, want := range [][]string{
		{"E", fmt.Sprintf("logsafe_test.go:%d] ", line-1), `"skipping key that is not a usable lease" err=` + fmt.Sprintf("%q", err.Error()) + ` logger="agent" key=` + quoted + " revision=7"},
		{"I", fmt.Sprintf("logsafe_test.go:%d] ", line+1), `"peer lease added" logger="agent" peer=` + quoted + ` backend="vxlan" hostID="a\nb\u202e" err="x\ny"`},
	} {
		if len(lines) != 2 || !strings.HasPrefix(lines[i], want[0]) || !strings.Contains(lines[i], want[1]+want[2]) {
			t.Errorf("want 2 lines, line %d starting %s with %s%s; the log is:\n%s", i+1, want[0], want[1], want[2], text)
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatal("errors.Is does not see through the error")
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
