package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// flannelsFileType is flannelsFile with its delegate type under "Type":
// JSON a tool wrote with another case, which flannel's plugin reads as
// "type" (types.NetConf; encoding/json matches keys whatever their case)
// and DELs with as it is.
var flannelsFileType = strings.Replace(flannelsFile, `"type":"bridge"`, `"Type":"bridge"`, 1)

// TestSavedTypeAnyCase: a per-container file of flannel's whose delegate
// type is under "Type" is run as flannel's plugin runs it. Before,
// decodeSaved found no delegate type in it: DEL of c1 ran bridge with a
// configuration rebuilt from subnet.env instead of the file, CHECK of c2
// failed ("no delegate type") without running the delegate, and GC left
// c3's file, and the address host-local holds for it, for good.
func TestSavedTypeAnyCase(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	// c3's with host-local's store where GC can read it.
	store := filepath.Join(f.dir, "ipam")
	c3 := strings.Replace(flannelsFileType, `"type":"host-local"`, `"dataDir":"`+store+`","type":"host-local"`, 1)
	for id, content := range map[string]string{"c1": flannelsFileType, "c2": flannelsFileType, "c3": c3} {
		if err := os.WriteFile(filepath.Join(f.dataDir, id), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(store, "cbr0"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(store, "cbr0", "10.244.5.3"), []byte("c3\r\neth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := f.attach("cbr0", "c1", "eth0", "")
	a.Netns = ""
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL of c1: %v", err)
	}
	if len(f.exec.calls) != 1 || f.exec.calls[0].command != "DEL" || string(f.exec.calls[0].stdin) != flannelsFileType {
		t.Errorf("DEL of c1 ran %d delegate calls, the last given\n%s\nwant one DEL given flannel's file\n%s", len(f.exec.calls), lastStdin(f), flannelsFileType)
	}

	f.exec.calls = nil
	prev := `,"prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.244.5.2/24"}]}`
	if err := f.p.Check(f.attach("cbr0", "c2", "eth0", prev)); err != nil {
		t.Errorf("CHECK of c2: %v", err)
	}
	if len(f.exec.calls) != 1 || f.exec.calls[0].command != "CHECK" || f.exec.calls[0].plugin != "bridge" {
		t.Errorf("CHECK of c2 ran %+v, want bridge's CHECK", f.exec.calls)
	}

	f.exec.calls = nil
	if err := f.p.GC(f.attach("cbr0", "c9", "eth0", `,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`)); err != nil {
		t.Fatal(err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		if c.command == "DEL" {
			dels = append(dels, c.ifName+" "+string(c.stdin))
		}
	}
	if want := []string{"eth0 " + c3}; !slices.Equal(dels, want) {
		t.Errorf("GC's DELs ran for %q, want %q", dels, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"c2"}; !slices.Equal(got, want) {
		t.Errorf("after GC dataDir holds %q, want %q", got, want)
	}
}
