package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigInitVNI0: a vxlan "VNI":0 is VNI 0 to the agents (flannel.0, as
// flanneld makes it; absent or null is 1), and config init says so, writes
// --vni 0 when given, and counts 0 → 1 as a change of the VNI under leases.
// Before, it printed Backend.VNI=1 for a config holding "VNI":0, dropped
// --vni 0 from the document (the agents ran VNI 1, where the operator asked
// for 0), and wrote a config moving the agents from VNI 0 to 1 while leases
// existed without a word.
func TestConfigInitVNI0(t *testing.T) {
	c := newCtl(t)
	out := c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "0")
	if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":0}}` {
		t.Errorf("config init --vni 0 stored %s", v)
	}
	if !strings.Contains(out, "Backend.VNI=0 Backend.Port=8472") {
		t.Errorf("config init --vni 0 printed %q, want Backend.VNI=0", out)
	}

	f := filepath.Join(t.TempDir(), "network.json")
	if err := os.WriteFile(f, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":0,"Port":4789}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := c.mustRun("config", "init", "--file", f); !strings.Contains(out, "Backend.VNI=0 Backend.Port=4789") {
		t.Errorf("config init --file with \"VNI\":0 printed %q, want Backend.VNI=0", out)
	}

	// Its agent advertises the VNI it runs (TestConfigInitUndoesForcedWireChange).
	c.vxlanLease("10.244.5.0/24", "198.18.0.1", `{"VNI":0,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--port", "4789"},
		"Backend.VNI 0 → 1", "1 lease(s) or reservation(s)", "--force")
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "0", "--port", "4789")
	// The default written out is the default: 1 stays 1.
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--port", "4789", "--force")
	if out := c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "1", "--port", "4789"); !strings.Contains(out, "Backend.VNI=1") {
		t.Errorf("config init --vni 1 printed %q", out)
	}
	if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, `"VNI":1`) {
		t.Errorf("config init --vni 1 stored %s", v)
	}
	// Back to 0 strands a host restarted on VNI 1 meanwhile.
	c.vxlanLease("10.244.6.0/24", "198.18.0.2", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}`)
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--vni", "0", "--port", "4789"},
		"Backend.VNI 1 → 0", "2 lease(s) or reservation(s)", "--force")
}

// TestConfigInitUDPPort0: the udp backend refuses an explicit "Port":0 at
// start (flanneld listens on a random port then and cannot send), so config
// init refuses --port 0 for udp, with the agents' words, and writes nothing.
// Before, --port 0 was left out of the document and 8285 written.
func TestConfigInitUDPPort0(t *testing.T) {
	c := newCtl(t)
	args := []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "0"}
	c.wantFail(exitUsage, args, "invalid config", `"Backend.Port": 0 is no port a peer can send to`)
	c.wantFail(exitUsage, append(args, "--force"), "invalid config", `"Backend.Port": 0 is no port a peer can send to`)
	if v, _, ok := c.get(prefix + "/config"); ok {
		t.Fatalf("config init --backend udp --port 0 wrote %s", v)
	}
	// vxlan takes Port 0 as 8472, the kernel's default, as flanneld does.
	if out := c.mustRun("config", "init", "--network", "10.244.0.0/16", "--port", "0"); !strings.Contains(out, "Backend.Port=8472") {
		t.Errorf("config init --port 0 (vxlan) printed %q", out)
	}
	if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Port":0}}` {
		t.Errorf("config init --port 0 (vxlan) stored %s", v)
	}
}
