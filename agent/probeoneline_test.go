package agent

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// TestProbeOneLine: what the probe finds for several endpoints is one line
// (agentctl prints one line per failure, /status's etcdError is shown in a
// table row), with each endpoint's failure in their order. errors.Join put
// each on a line of its own.
func TestProbeOneLine(t *testing.T) {
	dir := t.TempDir()
	a, b := "unix://"+filepath.Join(dir, "a.sock"), "unix://"+filepath.Join(dir, "b.sock")
	for name, err := range map[string]error{
		"probeEtcd":   probeEtcd(context.Background(), []string{a, b}, nil),
		"etcdAnswers": etcdAnswers(context.Background(), []string{a, b}),
	} {
		msg := err.Error()
		ia, ib := strings.Index(msg, a+": connect: "), strings.Index(msg, b+": connect: ")
		if strings.Contains(msg, "\n") || ia < 0 || ib < ia {
			t.Errorf("%s: %q; want one line naming %s, then %s", name, msg, a, b)
		}
	}
}
