package agent

import (
	"bytes"
	"os/exec"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/agentd/agentd/backend/iptables"
)

// TestIPTablesReloadDeletesUnmasqueradedFlows: a firewall's reload that
// flushes the nat table and restores a saved set holding our rules
// (firewall-cmd --reload with the iptables backend, netfilter-persistent
// reload, iptables-restore < saved) leaves our rules in place, so a check
// found nothing to write: a UDP flow a pod started in the flush's gap kept
// its unNATed conntrack entry, and the pod's address, for as long as it kept
// sending (helper 221 saw it still unmasqueraded 4 s after the restore, with
// --iptables-resync=1s). Now the check tells the restored rules from ours by
// their counters (see iptables.Manager), writes them again and deletes the
// entries of such flows, and the flow arrives from the host's address within
// --iptables-resync and a bound. Same namespaces and flows as
// TestIPTablesRepairDeletesUnmasqueradedFlows, with iptables-nft.
func TestIPTablesReloadDeletesUnmasqueradedFlows(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) { reloadedFlowsChild(t, iptables.ModeNFT) })
}

// TestIPTablesReloadDeletesUnmasqueradedFlowsLegacy is the same with
// iptables-legacy.
func TestIPTablesReloadDeletesUnmasqueradedFlowsLegacy(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) { reloadedFlowsChild(t, iptables.ModeLegacy) })
}

func reloadedFlowsChild(t *testing.T, mode string) {
	bin := func(suffix string) string {
		t.Helper()
		p, err := exec.LookPath("iptables-" + mode + suffix)
		if err != nil {
			t.Fatalf("iptables-%s%s not found (run `make deps` as root): %v", mode, suffix, err)
		}
		return p
	}
	ipt, save, restore := bin(""), bin("-save"), bin("-restore")
	rig := newCtRig(t, ipt)
	const resync = time.Second
	a := rig.masqAgent(t, mode, resync, testr.New(t), nil)
	saved := runCmd(t, nil, save, "-t", "nat")
	if !bytes.Contains(saved, []byte(iptables.MasqChain)) {
		t.Fatalf("%s -t nat holds no %s:\n%s", save, iptables.MasqChain, saved)
	}
	deleted := func() float64 { return counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_deleted_total") }

	// The reload: nat flushed, a flow started in the gap, the saved set
	// restored. Should a check come in the gap (and repair the flush), the
	// flow is not one the reload left behind: again.
	flow, restored := rig.reloadInGap(t, ipt, restore, saved, deleted, nil)
	rig.reloadRepaired(t, a, flow, restored, resync+3*time.Second, deleted)
	if got := counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_errors_total"); got != 0 {
		t.Errorf("agentd_conntrack_unmasqueraded_errors_total %v, want 0", got)
	}
}

// iptablesRepairs is agentd_drift_repairs_total{kind="iptables"}.
func iptablesRepairs(t *testing.T, o *observer) float64 {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentd_drift_repairs_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "kind" && l.GetValue() == iptablesKind {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatal(`no agentd_drift_repairs_total{kind="iptables"}`)
	return 0
}
