package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestFlanneldProcsNotSelf: agentd installed in flanneld's place (an
// existing flanneld unit or DaemonSet whose /opt/bin/flanneld is now agentd,
// which takes flanneld's flags) has the comm "flanneld" itself. The scan
// must not count this process, or every start is refused naming its own
// pid: "flanneld (pid <agentd's>) runs in this network namespace".
func TestFlanneldProcsNotSelf(t *testing.T) {
	proc := t.TempDir()
	self := strconv.Itoa(os.Getpid())
	for _, pid := range []string{self, "7"} {
		dir := filepath.Join(proc, pid)
		if err := os.MkdirAll(filepath.Join(dir, "ns"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "comm"), []byte("flanneld\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("net:[1]", filepath.Join(dir, "ns", "net")); err != nil {
			t.Fatal(err)
		}
	}
	got := flanneldProcs(proc, "net:[1]", nil)
	if len(got) != 1 || got[0] != 7 {
		t.Errorf("flanneldProcs with this process (pid %s) and pid 7 named flanneld = %v, want [7]: this process is agentd, whatever its name", self, got)
	}
}
