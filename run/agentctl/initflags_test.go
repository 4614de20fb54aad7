package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestConfigInitRefusesIgnoredFlags: a config value flag that config init
// would not write is a mistake (64), and nothing is written: beside --file,
// which holds the whole config, --backend (it has a default, so giving it
// went unnoticed and the file's backend was written); and an option of
// another backend than --backend's (host-gw's config carried "VNI": 7).
func TestConfigInitRefusesIgnoredFlags(t *testing.T) {
	c := newCtl(t)
	f := filepath.Join(t.TempDir(), "network.json")
	if err := os.WriteFile(f, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args  []string
		words []string
	}{
		{[]string{"--file", f, "--backend", "host-gw"}, []string{"--file", "--backend"}},
		{[]string{"--file", f, "--subnet-len", "0"}, []string{"--file", "--subnet-len"}},
		{[]string{"--network", "10.244.0.0/16", "--backend", "host-gw", "--vni", "7"}, []string{"--vni", "host-gw"}},
		{[]string{"--network", "10.244.0.0/16", "--backend", "udp", "--direct-routing"}, []string{"--direct-routing", "udp"}},
		{[]string{"--network", "10.244.0.0/16", "--backend", "host-gw", "--port", "8472"}, []string{"--port", "host-gw"}},
	} {
		c.wantFail(exitUsage, append([]string{"config", "init"}, tc.args...), tc.words...)
		if v, _, ok := c.get(prefix + "/config"); ok {
			t.Fatalf("config init %v wrote %s", tc.args, v)
		}
	}
	c.mustRun("config", "init", "--file", f)
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "8285", "--force")
}
