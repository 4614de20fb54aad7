package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// typedLease writes a live lease of backend typ ("" for none, as
// flanneld's udp writes) with no BackendData, as host-gw and flanneld's
// udp write theirs.
func (c *ctl) typedLease(sn, pub, typ string) {
	c.t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		c.t.Fatal(err)
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: typ}
	if _, ok, err := subnet.NewRegistry(c.cli, prefix).Create(ctx, netip.MustParsePrefix(sn), netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
		c.t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
	}
}

// TestConfigInitUndoesForcedTypeChange: a forced Backend.Type change can be
// undone while no agent has restarted on it, as a forced VNI or Port change
// can (1c134c1): while every host's lease still says the old type, and the
// settings its hosts share, writing that type back changes nothing for
// them. Before, after config init --backend host-gw --force, writing vxlan
// back was refused ("changes Backend.Type host-gw → vxlan") although every
// lease still said vxlan. A restore to other settings than the leases say,
// a host restarted on the forced type, or a lease that does not say its
// type (flanneld's udp) or its port (flanneld's vxlan) is still refused.
func TestConfigInitUndoesForcedTypeChange(t *testing.T) {
	vx := func(args ...string) []string {
		return append([]string{"config", "init", "--network", "10.244.0.0/16"}, args...)
	}
	c := newCtl(t)
	c.mustRun(vx()...)
	c.vxlanLease("10.244.5.0/24", "198.18.0.1", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`)
	c.vxlanLease("10.244.6.0/24", "198.18.0.2", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02","Port":8472}`)
	// A reservation no host has taken runs nothing.
	c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.3")

	c.wantFail(1, vx("--backend", "host-gw"), "backend vxlan, the new config says host-gw", "--force")
	c.mustRun(vx("--backend", "host-gw", "--force")...)
	// The hosts still run vxlan with VNI 1 on port 8472, as their leases say.
	c.wantFail(1, vx("--vni", "2"), "changes Backend.VNI 1 → 2 while 3 lease(s) or reservation(s) exist", "--force")
	c.wantFail(1, vx("--port", "4789"), "changes Backend.Port 8472 → 4789", "--force")
	c.mustRun(vx()...)

	// A host restarted on the forced type: going back would leave it apart.
	c.mustRun(vx("--backend", "host-gw", "--force")...)
	c.typedLease("10.244.8.0/24", "198.18.0.4", "host-gw")
	c.wantFail(1, vx(), "10.244.8.0-24 (198.18.0.4): backend host-gw, the new config says vxlan", "--force")

	// flanneld's vxlan lease says no port: it runs the stored config's.
	f := newCtl(t)
	f.mustRun(vx()...)
	f.vxlanLease("10.244.5.0/24", "198.18.0.1", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)
	f.mustRun(vx("--backend", "host-gw", "--force")...)
	f.wantFail(1, vx(), "changes Backend.Type host-gw → vxlan", "--force")

	// udp: agentd's leases say their port; flanneld's say no type.
	u := newCtl(t)
	u.mustRun(vx("--backend", "udp")...)
	u.udpLease("10.244.5.0/24", "198.18.0.1", json.RawMessage(`{"Port":8285}`))
	u.mustRun(vx("--backend", "vxlan", "--force")...)
	u.mustRun(vx("--backend", "udp")...)
	u.mustRun(vx("--backend", "vxlan", "--force")...)
	u.typedLease("10.244.6.0/24", "198.18.0.2", "")
	u.wantFail(1, vx("--backend", "udp"), "changes Backend.Type vxlan → udp", "--force")
}
