package cniplugin

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMasqRemovalRetried: when the removal of a container's masquerade
// chain after the delegate's DEL fails (the xtables lock held past
// xtablesWait, an iptables error), the chain is recorded in masqRetryDir
// before the attachment's saved configuration goes, so that the next GC
// (or ADD or DEL: TestMasqRemovalRetriedByLaterCommands) removes it then.
// GC reports the failure; DEL logs it and succeeds. Before 2026-12-06
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
	retryDir := filepath.Join(f.dataDir, masqRetryDir)
	if got, want := fileNames(t, retryDir), []string{"cbr0:c1:eth0", "cbr0:c2:eth0"}; !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q: the chains are still there, and no later command would retry", masqRetryDir, got, want)
	}

	f.masq.err = nil
	if err := f.p.GC(f.args("c1", `,"cni.dev/valid-attachments":[]`)); err != nil {
		t.Fatalf("GC: %v", err)
	}
	// In either order: c1's failed retry in c2's DEL may have put it
	// after c2's record (see recordsByAge).
	slices.Sort(f.masq.removed)
	if want := []string{"cbr0 c1", "cbr0 c2"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("the next GC removed the chains of %q, want %q", f.masq.removed, want)
	}
	if names := fileNames(t, f.dataDir); !slices.Equal(names, []string{masqRetryDir}) {
		t.Errorf("after the next GC dataDir holds %q", names)
	}
	if names := fileNames(t, retryDir); len(names) != 0 {
		t.Errorf("after the next GC %s holds %q", masqRetryDir, names)
	}
}

// TestDelMasqLookupFails: a DEL with nothing usable saved gives the
// delegate ipMasq by whether the container's masquerade chain is there.
// When that look-up fails (here ip6tables' xtables lock), the delegate
// still gets DEL, with ipMasq false, which needs no iptables, so the
// address is freed and the interface deleted; agentd-cni then removes the
// chain itself, as after a DEL without the pod's namespace. That failing
// too, the error goes to stderr and the chain is recorded for later
// commands to remove. Before, a failed look-up counted as no chain: nothing removed
// the chain, and nothing was logged.
func TestDelMasqLookupFails(t *testing.T) {
	fakeIptables(t, 4, "Another app is currently holding the xtables lock. Stopped waiting after 5s.")
	f := newFixture(t)
	f.p.masq = nil // iptables: the fakes
	f.writeEnv(t, envA)
	live := filepath.Join(f.dir, "netns")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// c1: nothing saved; c2: a damaged file.
	if err := os.WriteFile(f.saved("c2"), []byte(`{"cniVersion":"1.0.0","type":"bri`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		a := f.args(id, "")
		a.Netns = live
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL %s: %v", id, err)
		}
		if c := f.exec.calls[len(f.exec.calls)-1]; c.command != "DEL" || c.conf["ipMasq"] != false {
			t.Errorf("DEL of %s ran %s with ipMasq %v, want DEL with false", id, c.command, c.conf["ipMasq"])
		}
		if want := "DEL of container " + id + " interface eth0 in network cbr0: look for masquerade chain " + masqChainName("cbr0", id); !strings.Contains(f.errOut.String(), want) {
			t.Errorf("stderr %q, want %q…", f.errOut.String(), want)
		}
	}
	if got, want := fileNames(t, filepath.Join(f.dataDir, masqRetryDir)), []string{"cbr0:c1:eth0", "cbr0:c2:eth0"}; !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q: the chains may still be there, and no later command would retry", masqRetryDir, got, want)
	}
}
