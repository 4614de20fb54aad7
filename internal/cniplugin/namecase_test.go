package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// flannelsFileName is flannelsFile with its network name under the key
// "Name": JSON a runtime or a tool wrote with another case, which
// flannel's plugin, bridge and host-local read as "name" (encoding/json
// matches keys whatever their case).
var flannelsFileName = strings.Replace(flannelsFile, `"name":"cbr0"`, `"Name":"cbr0"`, 1)

// TestSavedNameAnyCase: a per-container file of flannel's whose network
// name is under "Name" is taken as that network's everywhere, as DEL of
// the attachment it serves already took it (readOwnSaved). Before, the
// other readers matched "name" exactly: the DEL of c1's eth1 without the
// pod's namespace removed cbr0's masquerade chain of c1, which the file
// (c1's eth0) still used, and after the network's rename (cbr0 to agentd)
// DEL of c2 under the new name rebuilt a configuration named agentd and
// left the file, c2's address and cbr0's chain of c2 for good.
func TestSavedNameAnyCase(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(flannelsFileName), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.p.Add(f.attach("cbr0", "c1", "eth1", "")); err != nil {
		t.Fatal(err)
	}
	f.delGone(t, "cbr0", "c1", "eth1")
	if len(f.masq.removed) > 0 {
		t.Errorf("DEL of c1's eth1 removed the masquerade chains of %q, while flannel's file of c1 (\"Name\":\"cbr0\") is there", f.masq.removed)
	}
	f.exec.calls = nil
	f.delGone(t, "agentd", "c2", "eth0")
	if len(f.exec.calls) != 1 || string(f.exec.calls[0].stdin) != flannelsFileName {
		t.Errorf("DEL of c2 under the new name ran %d delegate calls, the last given\n%s\nwant one DEL given flannel's file of c2\n%s", len(f.exec.calls), lastStdin(f), flannelsFileName)
	}
	f.delGone(t, "cbr0", "c1", "eth0")
	if want := []string{"cbr0 c2", "cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("the DELs removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got := fileNames(t, f.dataDir); len(got) != 0 {
		t.Errorf("after the DELs dataDir holds %q, want nothing", got)
	}
}

// TestGCLegacyNameAnyCase: GC releases a stale container's per-container
// file whose network name is under "Name" as it releases one under "name"
// (TestGCLegacy), with host-local's store of that name. Before, gcLegacy
// found no name in it and left it, and the address with it, for good.
func TestGCLegacyNameAnyCase(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	store := filepath.Join(f.dir, "ipam")
	extra := `,"ipam":{"dataDir":"` + store + `"}`
	if err := f.p.Add(f.attach("cbr0", "c1", "eth0", extra)); err != nil {
		t.Fatal(err)
	}
	saved := f.saved("c1")
	b, err := os.ReadFile(saved)
	if err != nil {
		t.Fatal(err)
	}
	legacy := strings.Replace(string(b), `"name":"cbr0"`, `"Name":"cbr0"`, 1)
	if legacy == string(b) {
		t.Fatalf("ADD saved no \"name\":\"cbr0\": %s", b)
	}
	// As flannel's plugin leaves it: the per-container file alone.
	if err := os.Remove(saved); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.dataDir, "c1"), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(store, "cbr0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "cbr0", "10.244.5.2"), []byte("c1\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	f.exec.calls = nil
	if err := f.p.GC(f.attach("cbr0", "c2", "eth0", extra+`,"cni.dev/valid-attachments":[]`)); err != nil {
		t.Fatal(err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		if c.command == "DEL" {
			dels = append(dels, c.ifName+" "+string(c.stdin))
		}
	}
	if want := []string{"eth0 " + legacy}; !slices.Equal(dels, want) {
		t.Errorf("GC's DELs ran for %q, want %q", dels, want)
	}
	if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("GC removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got := fileNames(t, f.dataDir); len(got) != 0 {
		t.Errorf("after GC dataDir holds %q, want nothing", got)
	}
}

// lastStdin is what the fixture's last delegate call was given, "" if none.
func lastStdin(f *fixture) string {
	if len(f.exec.calls) == 0 {
		return ""
	}
	return string(f.exec.calls[len(f.exec.calls)-1].stdin)
}
