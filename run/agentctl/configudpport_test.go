package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// udpLease writes a live udp lease as an agent would, with data as its
// BackendData: agentd's since 2026-12-06 say their port, flanneld's (and
// agentd's before) have none.
func (c *ctl) udpLease(sn, pub string, data json.RawMessage) {
	c.t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		c.t.Fatal(err)
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: "udp", BackendData: data}
	if _, ok, err := subnet.NewRegistry(c.cli, prefix).Create(ctx, netip.MustParsePrefix(sn), netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
		c.t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
	}
}

// TestConfigInitUDPPortRolls: agentd's udp leases say the port their host
// listens on and peers send there (818a27c), so a udp Port change splits
// no cluster of such hosts, and config init writes it without --force. A
// live lease that says no port (flanneld's, an older agentd's) is a host
// that sends to its own config's port: the change is refused naming it.
// Reservations have no host yet and do not count. Before, every udp Port
// change was refused while any key existed.
func TestConfigInitUDPPortRolls(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp")
	c.udpLease("10.244.5.0/24", "198.18.0.1", json.RawMessage(`{"Port":8285}`))
	c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.3")
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "9000")
	if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}` {
		t.Errorf("stored config %s", v)
	}

	c.udpLease("10.244.6.0/24", "198.18.0.2", nil)
	c.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "9001"},
		"Backend.Port 9000 → 9001", "10.244.6.0-24 (198.18.0.2)", "say no port", "--force")
	if v, _, _ := c.get(prefix + "/config"); v != `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":9000}}` {
		t.Errorf("the refused config was written: %s", v)
	}
}
