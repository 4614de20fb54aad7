package agent

import (
	"bytes"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"

	"github.com/agentd/agentd/subnet"
)

// TestIPTablesDockerUserLostCountedOnce: a reload of a filter table saved
// before dockerd was installed (`netfilter-persistent reload`, an
// `iptables-restore` at boot) deletes DOCKER-USER, and our jump in it, while
// our own chains, saved with it, stay. dockerd's next start makes
// DOCKER-USER again and the next check puts our jump back: one iptables
// drift repair, whether or not a check ran while DOCKER-USER was missing.
// Before, a check in that gap recorded DOCKER-USER as absent, so its return
// read as "made since" (dockerd started after agentd, not counted): 0
// repairs, against 1 without the check. Real iptables, in a network
// namespace of the test's own; the checks are called one by one.
func TestIPTablesDockerUserLostCountedOnce(t *testing.T) {
	inOwnNetns(t, dockerUserLostChild)
}

func dockerUserLostChild(t *testing.T) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatalf("iptables not found (run `make deps` as root): %v", err)
	}
	run := func(stdin []byte, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v: %s", name, args, err, out)
		}
		return out
	}
	const ourJump = `-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD`
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	own := lease("10.244.1.0/24", "198.18.0.1")
	for _, gapChecked := range []bool{false, true} {
		for _, table := range []string{"filter", "nat"} {
			run(nil, ipt, "-t", table, "-F")
			run(nil, ipt, "-t", table, "-X")
		}
		a := &agent{
			cfg:    Config{IPMasq: true, IPTablesForwardRules: true},
			log:    testr.New(t),
			health: newHealth(testr.New(t)),
			obs:    newObserver(),
		}
		check := func(what string, wantRepairs int64) {
			t.Helper()
			if err := a.reconcileIPTables(t.Context(), netCfg, own); err != nil {
				t.Fatalf("check in the gap %v: %s: %v", gapChecked, what, err)
			}
			if got := a.obs.status(a.health).DriftRepairs["iptables"]; got != wantRepairs {
				t.Errorf("check in the gap %v: %s: driftRepairs iptables %d, want %d", gapChecked, what, got, wantRepairs)
			}
		}
		dockerdStarts := func() {
			run(nil, ipt, "-N", "DOCKER-USER")
			run(nil, ipt, "-I", "FORWARD", "1", "-j", "DOCKER-USER")
		}

		check("first installation", 0)
		saved := run(nil, ipt+"-save", "-t", "filter")
		dockerdStarts()
		check("DOCKER-USER made after the first check", 0)
		run(saved, ipt+"-restore")
		if gapChecked {
			check("DOCKER-USER deleted by the reload", 0)
		}
		dockerdStarts()
		check("DOCKER-USER made again", 1)
		if out := run(nil, ipt+"-save", "-t", "filter"); !strings.Contains(string(out), ourJump+"\n") {
			t.Fatalf("check in the gap %v: no %q in:\n%s", gapChecked, ourJump, out)
		}
		check("nothing changed", 1)
	}
}
