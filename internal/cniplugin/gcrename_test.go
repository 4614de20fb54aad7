package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestGCAfterRename: after the network is renamed in the conflist (cbr0
// to agentd), the runtime GCs under the new name only. A pod added under
// cbr0 whose DEL never came (the runtime lost it) is released by that GC
// with the configuration saved under cbr0: the delegate's DEL (host-local
// frees the address in cbr0's store), the masquerade chain named after
// cbr0, the files. A valid pod added under cbr0 is kept, and so are the
// files of other networks sharing dataDir: one on another bridge, one
// with another subnet.env's ranges, one with another delegate key, and one
// whose file does not decode.
// Before, GC took only files named after the network's current name, and
// the stale pod's address, chain and files stayed for good.
func TestGCAfterRename(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	otherEnv := filepath.Join(f.dir, "other.env")
	if err := os.WriteFile(otherEnv, []byte(strings.ReplaceAll(envA, "10.244.5.1", "10.244.9.1")), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct{ network, id, ifName, extra string }{
		{"cbr0", "c1", "eth0", ""},
		{"cbr0", "c2", "eth0", ""},
		{"cni1net", "c1", "net1", `,"delegate":{"bridge":"cni1"}`},
		{"othersub", "c1", "net2", `,"subnetFile":"` + otherEnv + `"`},
		{"hairpin", "c1", "net4", `,"delegate":{"hairpinMode":true}`},
	} {
		if err := f.p.Add(f.attach(a.network, a.id, a.ifName, a.extra)); err != nil {
			t.Fatalf("ADD %v: %v", a, err)
		}
	}
	if err := os.WriteFile(filepath.Join(f.dataDir, "broken:c1:net3"), []byte(`{"type":"bri`), 0o600); err != nil {
		t.Fatal(err)
	}
	f.exec.calls = nil
	// Only c2's eth0 is valid: the runtime lists the pods of network
	// agentd, and knows of no DEL due for c1.
	if err := f.p.GC(asV110(f.attach("agentd", "c1", "eth0", `,"cni.dev/valid-attachments":[{"containerID":"c2","ifname":"eth0"}]`))); err != nil {
		t.Fatalf("GC under the new name: %v", err)
	}
	var dels []string
	for _, c := range f.exec.calls {
		if c.command == "DEL" {
			dels = append(dels, c.conf["name"].(string))
		}
	}
	if want := []string{"cbr0"}; !slices.Equal(dels, want) {
		t.Errorf("GC's DELs ran for networks %q, want %q (c1's eth0, with its configuration saved under cbr0)", dels, want)
	}
	if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("GC removed the masquerade chains of %q, want %q", f.masq.removed, want)
	}
	if got, want := fileNames(t, f.dataDir), []string{"broken:c1:net3", "c2", "cbr0:c2:eth0", "cni1net:c1:net1", "hairpin:c1:net4", "othersub:c1:net2"}; !slices.Equal(got, want) {
		t.Errorf("after GC dataDir holds %q, want %q", got, want)
	}
}
