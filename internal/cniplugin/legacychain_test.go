package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestLegacyAttachmentKeepsChain: a container whose eth0 flannel's plugin
// added (its only file the per-container one, naming cbr0) gets eth1 from
// agentd-cni after the upgrade. bridge's masquerade chain is the
// container's in the network (CNI-… of cbr0 and c1), so it serves eth0 too.
// DEL of eth1 without the pod's namespace (and GC's DEL, and the retry of a
// failed removal) removes the chain only while no other attachment of the
// container in the network is saved. Before, chainInUse looked only at
// <network>:<container>:* files: the chain went with eth1, and eth0's
// traffic left unmasqueraded while the pod ran. Now it stays until eth0's
// DEL, which removes it; a per-container file of another network (or one
// that is eth1's second name) does not keep it.
func TestLegacyAttachmentKeepsChain(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for id, content := range map[string]string{"c1": flannelsFile, "c2": flannelsFile} {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range [][3]string{{"cbr0", "c1", "eth1"}, {"other", "c2", "net1"}, {"cbr0", "c3", "eth0"}, {"cbr0", "c3", "eth1"}} {
		if err := f.p.Add(f.attach(a[0], a[1], a[2], "")); err != nil {
			t.Fatal(err)
		}
	}
	f.delGone(t, "cbr0", "c1", "eth1")
	if len(f.masq.removed) > 0 {
		t.Errorf("DEL of c1's eth1 removed the masquerade chains of %q, while flannel's file of c1's eth0 in cbr0 is there", f.masq.removed)
	}
	// c2's per-container file is cbr0's, not network other's; c3's is a
	// second name of its eth0's file.
	f.delGone(t, "other", "c2", "net1")
	f.delGone(t, "cbr0", "c3", "eth1")
	f.delGone(t, "cbr0", "c3", "eth0")
	f.delGone(t, "cbr0", "c1", "eth0")
	if want := []string{"other c2", "cbr0 c3", "cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("the DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q", got, want)
	}
}
