package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseLeaseOwnPIDNamespace: the refusal of --release-lease beside
// a flanneld sees only the processes of its own PID namespace. Beside a
// flanneld (here a stand-in, sleep named flanneld) it refuses when it
// shares flanneld's PID namespace; run in a PID namespace of its own, as
// in a pod without hostPID (unshare --pid --mount-proc), it does not see
// flanneld, releases the lease and removes flannel.1, and says in one line
// what it could not look for and where to run it instead. Before, that
// line was not there: nothing told the operator the check was blind.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agent stopped, "flanneld", --release-lease (twice)
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseOwnPIDNamespace(t *testing.T) {
	t.Parallel()
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare not found (util-linux): %v", err)
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, 1, hfConfig("vxlan"))
	h1 := f.c.Host(1)
	a1 := f.start(h1)
	f.waitReady(h1)
	if code, err := a1.Stop(); err != nil || code != 0 {
		t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
	}
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(h1.Dir, "flanneld")
	if err := os.WriteFile(fake, b, 0o755); err != nil {
		t.Fatal(err)
	}
	fl, err := h1.StartNamed("flanneld", fake, "3600")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Kill() })
	bin, err := f.c.Binary(f.ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	release := func(label string, argv ...string) (int, string) {
		t.Helper()
		p, err := h1.StartNamed(label, argv[0], argv[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		code, err := p.Wait(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("h1 %s: exit %d\n%s", label, code, raw)
		return code, string(raw)
	}
	note := "--release-lease runs in a PID namespace of its own, not the host's, so it looked for a flanneld only among that namespace's processes"

	// In flanneld's PID namespace: refused.
	code, log := release("release-same-pidns", append([]string{bin}, h1.AgentArgs("--release-lease")...)...)
	if code != 1 || len(linesWith(log, `"agentd failed"`, fmt.Sprintf("flanneld (pid %d) runs in this network namespace: nothing released", fl.Pid()))) != 1 {
		t.Errorf("h1 --release-lease beside flanneld in its PID namespace: exit %d, want 1 and the refusal naming pid %d", code, fl.Pid())
	}
	// The note depends on this test's PID namespace, which the agent
	// shares: the host's (initial) one, or a container's.
	self, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	if own, got := self != "pid:[4026531836]", strings.Contains(log, note); got != own {
		t.Errorf("h1 --release-lease in this test's PID namespace %s: logged the note for a PID namespace of its own: %v, want %v", self, got, own)
	}

	// In a PID namespace of its own: flanneld not seen, the lease
	// released, and the note logged once.
	code, log = release("release-own-pidns", append([]string{unshare, "--pid", "--fork", "--mount-proc", bin}, h1.AgentArgs("--release-lease")...)...)
	if code != 0 {
		t.Errorf("h1 --release-lease in a PID namespace of its own: exit %d, want 0 (flanneld is not seen there)", code)
	}
	for _, want := range [][]string{
		{note, "run agentd --release-lease on the host, or in a pod with hostPID: true", `pidNamespace="pid:[`},
		{`"lease released; subnet.env removed"`},
	} {
		if ls := linesWith(log, want...); len(ls) != 1 {
			t.Errorf("h1: --release-lease in a PID namespace of its own did not log a line with %s once", strings.Join(want, " and "))
		}
	}
	if _, err := h1.LinkByName("flannel.1"); err == nil {
		t.Errorf("h1: flannel.1 is still there after --release-lease in a PID namespace of its own")
	}
}
