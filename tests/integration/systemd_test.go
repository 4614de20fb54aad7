package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/sdunit"
)

const (
	agentdUnit   = "../../dist/systemd/agentd.service"
	dockerDropIn = "../../dist/systemd/docker.service.d/agentd.conf"
)

// distUnitDir is where the distribution's units are (Debian's systemd
// packages still use /lib; merged-/usr systems have both).
func distUnitDir(t *testing.T) string {
	for _, d := range []string{"/lib/systemd/system", "/usr/lib/systemd/system"} {
		if _, err := os.Stat(filepath.Join(d, "multi-user.target")); err == nil {
			return d
		}
	}
	t.Fatal("no systemd unit directory with multi-user.target")
	return ""
}

// verifyRoot builds a root directory for `systemd-analyze --root`: the
// distribution's units, agentd.service and the docker drop-in installed
// where the README says, the given unit files' replacements applied, and an
// executable stub for every program the units run (verify checks that each
// one exists and is executable, nothing more; the real programs are tested
// elsewhere in this package).
func verifyRoot(t *testing.T, agentdService, dropIn []byte) string {
	t.Helper()
	root := t.TempDir()
	lib := filepath.Join(root, "lib/systemd/system")
	if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-a", distUnitDir(t), lib).CombinedOutput(); err != nil {
		t.Fatalf("copy units: %v: %s", err, out)
	}
	etc := filepath.Join(root, "etc/systemd/system")
	mustWrite(t, filepath.Join(etc, "agentd.service"), agentdService)
	mustWrite(t, filepath.Join(etc, "docker.service.d/agentd.conf"), dropIn)

	dockerUnit, err := sdunit.Load(filepath.Join(lib, "docker.service"), filepath.Join(etc, "docker.service.d/agentd.conf"))
	if err != nil {
		t.Fatal(err)
	}
	agentd, err := sdunit.Load(filepath.Join(etc, "agentd.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []*sdunit.Unit{dockerUnit, agentd} {
		for _, key := range []string{"ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost"} {
			for _, line := range u.List("Service", key) {
				cmd, err := sdunit.ExpandCommand(line, nil)
				if err != nil {
					t.Fatalf("%s=%s: %v", key, line, err)
				}
				prog := cmd.Argv[0]
				if !filepath.IsAbs(prog) {
					prog = "/usr/bin/" + prog // one of systemd's search directories
				}
				mustWrite(t, filepath.Join(root, prog), []byte("#!/bin/sh\nexit 0\n"))
				os.Chmod(filepath.Join(root, prog), 0o755)
			}
		}
	}
	return root
}

func mustWrite(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// analyzeVerify runs systemd-analyze verify on agentd.service and
// docker.service (with the drop-in) inside root. systemd-analyze exits 0 on
// many problems (an unknown key, a bad value) and only prints them, so any
// output counts as a finding.
func analyzeVerify(t *testing.T, sa, root string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, sa, "--root="+root, "verify", "agentd.service", "docker.service")
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "SYSTEMD_PAGER=")
	out, err := cmd.CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil && s == "" {
		s = err.Error()
	}
	return s
}

// TestSystemdAnalyzeVerify checks agentd.service and the docker drop-in with
// systemd's own checker, the same one `systemctl daemon-reload` relies on.
// It needs no systemd running: systemd-analyze reads a root directory.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa := requireTool(t, "systemd-analyze", "systemd")
	requireFile(t, filepath.Join(distUnitDir(t), "docker.service"), "docker.io")
	unit, err := os.ReadFile(agentdUnit)
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile(dockerDropIn)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if out := analyzeVerify(t, sa, verifyRoot(t, unit, dropIn)); out != "" {
		t.Fatalf("systemd-analyze verify agentd.service docker.service:\n%s", out)
	}
	t.Logf("systemd-analyze verify agentd.service docker.service (with dist/systemd/docker.service.d/agentd.conf): no findings (%v)", time.Since(start).Round(time.Millisecond))

	// The checker must be able to fail here: a misspelt key and a bad value
	// in either file are reported.
	badUnit := strings.Replace(string(unit), "\nType=notify", "\nType=notifyy", 1)
	badDropIn := strings.Replace(string(dropIn), "\nAfter=agentd.service", "\nAfterr=agentd.service", 1)
	out := analyzeVerify(t, sa, verifyRoot(t, []byte(badUnit), []byte(badDropIn)))
	for _, want := range []string{"notifyy", "Afterr"} {
		if !strings.Contains(out, want) {
			t.Errorf("a broken unit went unnoticed (%q not reported); output:\n%s", want, out)
		}
	}
}

// TestSystemdUnitSparesUDPKeeper: the udp backend's descriptor keeper is a
// child of agentd in the unit's cgroup, and carries the datapath across an
// agent restart only if stopping the unit signals agentd alone. With
// KillMode=control-group or mixed (systemd.kill(5): the SIGKILL that follows
// goes to every process left in the cgroup) every restart would drop
// packets until the new agent had made new queues.
func TestSystemdUnitSparesUDPKeeper(t *testing.T) {
	u, err := sdunit.Load(agentdUnit)
	if err != nil {
		t.Fatal(err)
	}
	if mode, _ := u.Value("Service", "KillMode"); mode != "process" {
		t.Fatalf("%s: KillMode=%q; the udp descriptor keeper needs KillMode=process to survive a restart", agentdUnit, mode)
	}
}
