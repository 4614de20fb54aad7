package udp

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestKeeperIgnoresSIGHUP: the keeper ignores SIGHUP, as the agent does: it
// has nothing to reload, and `pkill -HUP -f agentd` (an operator's habit to
// reload a daemon) matches its command line, the agentd binary's. It still answers afterwards, and no
// keeper death is logged. Before, SIGHUP's default action ended it: the
// running agent started another, logged the death as an error and counted
// it in agentd_udp_keeper_restarts_total.
func TestKeeperIgnoresSIGHUP(t *testing.T) {
	h := newTestHost(t)
	// An answer says the keeper runs its program, which ignores SIGHUP
	// first.
	if err := h.keeperAnswers(); err != nil {
		t.Fatal(err)
	}
	pid := h.keeperPid()
	if ign, err := sigIgnored(pid, unix.SIGHUP); err != nil || !ign {
		t.Fatalf("the keeper (pid %d) does not ignore SIGHUP (%v)", pid, err)
	}
	h.signalKeeper(unix.SIGHUP)
	// An ignored signal is discarded as it is sent: nothing is pending.
	if err := h.keeperAnswers(); err != nil {
		t.Fatalf("after SIGHUP: %v", err)
	}
	if got := h.keeperPid(); got != pid {
		t.Fatalf("keeper pid %d after SIGHUP, want %d", got, pid)
	}
	h.reconcile()
	if h.logged("the descriptor keeper died") {
		t.Errorf("a keeper death was logged after SIGHUP:\n%s", h.logText())
	}
}

// sigIgnored reports whether process pid ignores sig, from the SigIgn mask
// of /proc/<pid>/status.
func sigIgnored(pid int, sig unix.Signal) (bool, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return false, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "SigIgn:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return mask&(1<<(uint(sig)-1)) != 0, err
		}
	}
	return false, fmt.Errorf("no SigIgn in /proc/%d/status", pid)
}
