package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestConfigInitUDPPortKeysFlanneldReads: a key only flanneld reads as a
// lease (beside <prefix>/subnets/, as <prefix>/subnets-old/10.244.5.0-24,
// or 10.244.6.0-024) stops a udp Port change as a live lease that says no
// port does: flanneld hosts route its subnet to its PublicIP at their own
// config's port, whatever its value says, and no agent reads a port from
// it. Before, config init counted such keys for every other check (6fda17e)
// but wrote the udp Port change past them.
func TestConfigInitUDPPortKeysFlanneldReads(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ key, value string }{
		{prefix + "/subnets-old/10.244.5.0-24", `{"PublicIP":"198.18.0.2"}`},
		// A value that says a port is no different to flanneld.
		{prefix + "/subnets-old/10.244.5.0-24", `{"PublicIP":"198.18.0.2","BackendType":"udp","BackendData":{"Port":8285}}`},
		{prefix + "/subnets/10.244.6.0-024", `{"PublicIP":"198.18.0.2"}`},
	} {
		t.Run(strings.TrimPrefix(tc.key, prefix+"/"), func(t *testing.T) {
			c := newCtl(t)
			c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp")
			c.udpLease("10.244.7.0/24", "198.18.0.1", json.RawMessage(`{"Port":8285}`))
			if _, err := c.cli.Put(ctx, tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "9000"},
				"Backend.Port 8285 → 9000", "while 1 live lease(s) say no port or are keys only flanneld reads",
				tc.key+" (agents skip it; flanneld reads it as a lease of 198.18.0.2)", "--force")
			if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}` {
				t.Errorf("config written past a key flanneld reads as a lease: %s", v)
			}
		})
	}
}
