package agent

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/tests/cluster"
)

// TestIPTablesUnstampedReloadNotWritten: with an iptables that does not set
// a rule's counters (ip6tables-nft 1.8.9 drops -c; here iptables-nft behind
// an iptables-nft-restore that strips it), a firewall's reload after our nat
// rules counted traffic put them back as they were, counters aside. The
// check after it wrote nat again, unchanged, only so that the conntrack
// table was read. Now it writes nothing and still reads it: a UDP flow
// started in the reload's gap arrives from the host's address within
// --iptables-resync and a bound, its entry deleted and counted as a repair,
// with no iptables-restore of nat since the reload. Same namespaces and
// flows as TestIPTablesReloadDeletesUnmasqueradedFlows.
func TestIPTablesUnstampedReloadNotWritten(t *testing.T) {
	inOwnNetns(t, unstampedReloadChild)
}

func unstampedReloadChild(t *testing.T) {
	bin := func(name string) string {
		t.Helper()
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s not found (run `make deps` as root): %v", name, err)
		}
		return p
	}
	ipt, save, restore := bin("iptables-nft"), bin("iptables-nft-save"), bin("iptables-nft-restore")
	// The agent's iptables: the real iptables-nft and iptables-nft-save,
	// and an iptables-nft-restore that strips every -c and keeps a copy of
	// each input it was given.
	dir := t.TempDir()
	restores, saves := filepath.Join(dir, "restores"), filepath.Join(dir, "saves")
	if err := os.Symlink(ipt, filepath.Join(dir, "iptables-nft")); err != nil {
		t.Fatal(err)
	}
	scripts := map[string]string{
		"iptables-nft-save":    fmt.Sprintf("#!/bin/sh\necho \"$*\" >>%s\nexec %s \"$@\"\n", saves, save),
		"iptables-nft-restore": fmt.Sprintf("#!/bin/sh\nsed -E 's/ -c [0-9]+ [0-9]+//' | tee -a %s | exec %s \"$@\"\n", restores, restore),
	}
	for name, script := range scripts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	// count is how many lines of file hold s.
	count := func(file, s string) int {
		b, err := os.ReadFile(file)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return strings.Count(string(b), s)
	}

	rig := newCtRig(t, ipt)
	ctx, source := rig.ctx, rig.source

	logs := &logLines{}
	log := funcr.New(func(prefix, args string) {
		logs.add(prefix, args)
		t.Log(prefix, args)
	}, funcr.Options{Verbosity: 2})
	const resync = time.Second
	a := rig.masqAgent(t, iptables.ModeNFT, resync, log, logs.seen("this iptables does not set a rule's counters", "the stamp not given up"))
	saved := runCmd(t, nil, save, "-t", "nat")
	if !bytes.Contains(saved, []byte(iptables.MasqChain)) {
		t.Fatalf("%s -t nat holds no %s:\n%s", save, iptables.MasqChain, saved)
	}
	// Our rules count a flow; a check reads them so: without the stamp a
	// reload is noticed only by counters that went back. The second read
	// of nat begun since the flow was seen is made by a check that began
	// after the first one had read them.
	ctSend(t, ctx, &rig.wg, rig.podNS, "counted")
	if src := source("counted"); src != ctHost.String() {
		t.Fatalf("flow counted arrives from %s, want %s", src, ctHost)
	}
	natReads := count(saves, "-t nat")
	err := cluster.Eventually(ctx, 10*resync, func() error {
		if n := count(saves, "-t nat"); n < natReads+2 {
			return fmt.Errorf("%d reads of nat since the flow was seen, want 2", n-natReads)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	deleted := func() float64 { return counterValue(t, a.obs, "agentd_conntrack_unmasqueraded_deleted_total") }

	// The reload: nat flushed, a flow started in the gap, the saved set
	// restored (as the real iptables-nft-restore does, counters 0). Should
	// a check come in the gap (and repair the flush), the flow is not one
	// the reload left behind: again.
	natWrites := 0
	flow, restored := rig.reloadInGap(t, ipt, restore, saved, deleted, func() func() bool {
		natWrites = count(restores, "*nat")
		return func() bool { return count(restores, "*nat") == natWrites }
	})
	rig.reloadRepaired(t, a, flow, restored, resync+3*time.Second, deleted)
	if n := count(restores, "*nat") - natWrites; n != 0 {
		t.Errorf("%d iptables-restore of nat since the reload, want none: the rules it put back are ours", n)
	}
	if n := logs.count("iptables rules left in place, their counters gone back"); n != 1 {
		t.Errorf("%d lines say our rules were left in place, their counters gone back; want 1", n)
	}
}
