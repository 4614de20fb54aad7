package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigInitMTU: a vxlan Backend.MTU (flanneld's: that of the
// encapsulated packets; without it, each host's underlay MTU) is written as
// the file gives it and printed with the other settings the agents will
// run, as the backend's parser reads it; without the key nothing is
// printed for it, each host's own MTU being unknown here. Before, the line
// omitted it, so an operator could not tell from config init's output that
// the agents would run MTU 1400. A change of it under leases is written
// without --force: hosts with another MTU still reach each other, and each
// applies it when its agent restarts.
func TestConfigInitMTU(t *testing.T) {
	c := newCtl(t)
	file := func(doc string) string {
		f := filepath.Join(t.TempDir(), "network.json")
		if err := os.WriteFile(f, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	const doc = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`
	out := c.mustRun("config", "init", "--file", file(doc))
	if !strings.Contains(out, "Backend.Type=vxlan Backend.VNI=1 Backend.Port=8472 Backend.DirectRouting=false Backend.MTU=1400\n") {
		t.Errorf("config init of a vxlan MTU 1400 printed %q, want the settings with Backend.MTU=1400", out)
	}
	if v, _, _ := c.get(prefix + "/config"); v != doc {
		t.Errorf("config init stored %s, want %s", v, doc)
	}

	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	out = c.mustRun("config", "init", "--file", file(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1450}}`))
	if !strings.Contains(out, "Backend.MTU=1450\n") {
		t.Errorf("config init of MTU 1450 under a lease printed %q, want Backend.MTU=1450", out)
	}
	out = c.mustRun("config", "init", "--network", "10.244.0.0/16")
	if strings.Contains(out, "MTU") {
		t.Errorf("config init without an MTU printed %q, want no MTU", out)
	}
}
