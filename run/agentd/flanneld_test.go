package main

import (
	"bytes"
	goflag "flag"
	"os"
	"os/exec"
	"regexp"
	"syscall"
	"testing"

	"k8s.io/klog/v2"
)

// helpFlag is one flag of `flanneld -help` (Go's flag package format:
// "  -name type" then the usage, "(default …)" at its end when not zero).
var (
	helpFlag    = regexp.MustCompile(`(?m)^  -([A-Za-z0-9_-]+)(?: (\w+))?\n((?:    .*\n?)*)`)
	flagLine    = regexp.MustCompile(`(?m)^  -`)
	flagDefault = regexp.MustCompile(`\(default "?([^")]*)"?\)`)
)

// samples are values for flags whose zero value means nothing: flanneld
// takes an empty interface name, agentd refuses it.
var samples = map[string]string{"iface": "eth0", "iface-regex": "eth.*"}

// TestFlanneldFlags: every flag the real flanneld has, at a value flanneld
// itself takes (a sample, its default, or 0), passes parseArgs (with klog's
// flags, as run gives it), values judged and the
// Config validated, so a flanneld unit's command line starts agentd. The
// flags come from the binary's own -help (AGENTD_FLANNELD_BIN, which make
// test builds and sets), so a flanneld upgrade (FLANNELD_VERSION) that adds
// a flag fails here until agentd knows it.
func TestFlanneldFlags(t *testing.T) {
	bin := os.Getenv("AGENTD_FLANNELD_BIN")
	if bin == "" {
		const msg = "AGENTD_FLANNELD_BIN is not set: `make test` builds flanneld (make flanneld-bin) and sets it"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
		}
		t.Skip(msg)
	}
	help, _ := flanneldCmd(bin, "-help").CombinedOutput() // its status says nothing
	ms := helpFlag.FindAllSubmatch(help, -1)
	if n := len(flagLine.FindAll(help, -1)); len(ms) != n || n < 20 {
		t.Fatalf("read %d flags of the %d lines starting with '  -' in flanneld -help:\n%s", len(ms), n, help)
	}
	// flanneld exits 0 after a usage error too: it took arg when it
	// printed only its version.
	flanneldTakes := func(arg string) bool {
		out, _ := flanneldCmd(bin, arg, "-version").CombinedOutput()
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
		values := []string{zero, "0"}
		if v, ok := samples[name]; ok {
			values = []string{v}
		}
		for _, v := range values {
			if flanneldTakes("-" + name + "=" + v) {
				arg = "-" + name + "=" + v
				break
			}
		}
		if arg == "" {
			t.Errorf("flanneld refuses -%s=%q and -%s=0; the test needs a value it takes", name, zero, name)
			continue
		}
		tried++
		logFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
		klog.InitFlags(logFlags)
		if _, err := parseArgs([]string{arg}, envMap(nil), logFlags); err != nil {
			t.Errorf("flanneld takes %s, agentd does not: %v", arg, err)
		}
	}
	t.Logf("agentd takes the %d flags of %s at values flanneld takes", tried, bin)
}

// flanneldCmd is the flanneld at bin with args, in a network namespace of
// its own when the tests run as root (as in CI): agents that other packages'
// tests start meanwhile in this namespace refuse to start beside a flanneld
// there (flanneldRunningError), and TestStateDirLocked once failed so.
func flanneldCmd(bin string, args ...string) *exec.Cmd {
	cmd := exec.Command(bin, args...)
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	}
	return cmd
}
