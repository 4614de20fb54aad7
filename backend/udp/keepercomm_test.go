package udp

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestKeeperProcessName: the keeper's process name, which ps -e, top,
// pgrep, ss -p (the users of port 8285) and systemd's "left-over process"
// line at a unit's start show, is flannel0-keeper, what it keeps, with no
// "agentd" in it for pkill agentd to match. Before, started as
// /proc/self/exe, it was "exe": `ss -ulpn` showed port 8285 held by
// users:(("exe",pid=…)).
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
	if got := strings.TrimSuffix(string(b), "\n"); got != "flannel0-keeper" {
		t.Errorf("the keeper (pid %d) is named %q, want %q", pid, got, "flannel0-keeper")
	}
}
