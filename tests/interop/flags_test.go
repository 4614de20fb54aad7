package interop

import (
	"bytes"
	"context"
	"os/exec"
	"regexp"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// flanneldFlag is one flag of `flanneld -help` (Go's flag package format:
// "  -name type" then the usage, "(default …)" at its end when not zero).
var flanneldFlag = regexp.MustCompile(`(?m)^  -([a-z0-9-]+)(?: (\w+))?\n((?:    .*\n?)*)`)

var flagDefault = regexp.MustCompile(`\(default "?([^")]*)"?\)`)

// TestFlanneldFlags: every flag the real flanneld has, given a value
// flanneld itself accepts (its default, or 0), is accepted by agentd, so a
// flanneld unit's command line starts agentd. The flags come from the
// binary's own -help, so a flanneld upgrade (FLANNELD_VERSION) that adds one
// fails here until agentd knows it.
func TestFlanneldFlags(t *testing.T) {
	bin := flanneld(t)
	help, _ := exec.Command(bin, "-help").CombinedOutput() // its status says nothing
	ms := flanneldFlag.FindAllSubmatch(help, -1)
	if len(ms) < 20 {
		t.Fatalf("found %d flags in flanneld -help, expected more; output:\n%s", len(ms), help)
	}
	c := cluster.Start(t, cluster.Options{NoEtcd: true, Logf: t.Logf})
	agentd, err := c.Binary(context.Background(), "agentd")
	if err != nil {
		t.Fatal(err)
	}
	// flanneld exits 0 after a usage error too: it accepted arg when it
	// printed only its version.
	flanneldAccepts := func(arg string) bool {
		out, _ := exec.Command(bin, arg, "-version").CombinedOutput()
		return bytes.Count(out, []byte("\n")) == 1 && bytes.HasPrefix(out, []byte("v"))
	}
	tried := 0
	for _, m := range ms {
		name, typ := string(m[1]), string(m[2])
		if name == "help" || name == "version" {
			continue
		}
		zero := ""
		switch {
		case flagDefault.Match(m[3]):
			zero = string(flagDefault.FindSubmatch(m[3])[1])
		case typ == "":
			zero = "false" // a boolean flag, false by default
		}
		arg := ""
		for _, v := range []string{zero, "0"} {
			if flanneldAccepts("-" + name + "=" + v) {
				arg = "-" + name + "=" + v
				break
			}
		}
		if arg == "" {
			t.Errorf("flanneld refuses -%s=%q and -%s=0; the test needs a value it takes", name, zero, name)
			continue
		}
		tried++
		out, err := exec.Command(agentd, "--version", arg).CombinedOutput()
		if err != nil || !bytes.HasPrefix(out, []byte("agentd ")) {
			t.Errorf("flanneld takes %s, agentd does not: %v: %s", arg, err, out)
		}
	}
	t.Logf("agentd accepts the %d flags of %s at values flanneld takes", tried, bin)
}
