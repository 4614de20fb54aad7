package cniplugin

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestMasqRemovalRetried: when the removal of a container's masquerade
// chain after the delegate's DEL fails (the xtables lock held past
// go-iptables' wait, an iptables error), the attachment's saved
// configuration stays, so that the next GC releases it again and removes
// the chain then. GC reports the failure; DEL logs it and succeeds. Before,
// the file went first: the next GC did not see the attachment, and the
// chain stayed for good.
func TestMasqRemovalRetried(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	for _, id := range []string{"c1", "c2"} {
		if err := f.p.Add(f.args(id, "")); err != nil {
			t.Fatal(err)
		}
	}
	f.masq.err = errors.New("delete masquerade chain CNI-x: xtables lock")
	err := f.p.GC(f.args("c1", `,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`))
	if err == nil || !strings.Contains(err.Error(), "container c1 interface eth0: delete masquerade chain CNI-x: xtables lock") {
		t.Errorf("GC with the chain's removal failing: %v", err)
	}
	a := f.args("c2", "")
	a.Netns = ""
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := f.errOut.String(); !strings.Contains(got, "DEL of container c2 interface eth0 in network cbr0: delete masquerade chain CNI-x: xtables lock") {
		t.Errorf("stderr %q", got)
	}
	for _, id := range []string{"c1", "c2"} {
		if _, err := os.Stat(f.saved(id)); err != nil {
			t.Errorf("%s's chain is still there, but its saved configuration is gone (%v): no GC will retry", id, err)
		}
	}

	f.masq.err = nil
	if err := f.p.GC(f.args("c1", `,"cni.dev/valid-attachments":[]`)); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if want := []string{"cbr0 c1", "cbr0 c2"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("the next GC removed the chains of %q, want %q", f.masq.removed, want)
	}
	if names := fileNames(t, f.dataDir); len(names) != 0 {
		t.Errorf("after the next GC dataDir holds %q", names)
	}
}
