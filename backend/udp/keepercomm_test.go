package udp

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestKeeperProcessName: the keeper's process name, which ps -e, top,
// pgrep, ss -p (the users of port 8285) and systemd's "left-over process"
// line at a unit's start show, is agentd-udp-keep (agentd-udp-keeper cut to
// the kernel's 15 bytes). Before, started as /proc/self/exe, it was "exe":
// `ss -ulpn` showed port 8285 held by users:(("exe",pid=…)), and nothing
// named agentd.
func TestKeeperProcessName(t *testing.T) {
	h := newTestHost(t)
	// An answer says the keeper runs its program, which names it first.
	if err := h.keeperAnswers(); err != nil {
		t.Fatal(err)
	}
	pid := h.b.keeper.Process.Pid
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSuffix(string(b), "\n"); got != keeperComm || !strings.HasPrefix(keeperName, got) {
		t.Errorf("the keeper (pid %d) is named %q, want %q", pid, got, keeperComm)
	}
}
