package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// vxlanLease writes a live vxlan lease whose BackendData is data, as the
// agent of pub writes it from the settings it runs.
func (c *ctl) vxlanLease(sn, pub, data string) {
	c.t.Helper()
	ctx := context.Background()
	g, err := c.cli.Grant(ctx, 3600)
	if err != nil {
		c.t.Fatal(err)
	}
	attrs := subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan", BackendData: json.RawMessage(data)}
	if _, ok, err := subnet.NewRegistry(c.cli, prefix).Create(ctx, netip.MustParsePrefix(sn), netip.Prefix{}, attrs, int64(g.ID)); err != nil || !ok {
		c.t.Fatalf("create lease %s: ok=%v err=%v", sn, ok, err)
	}
}

// TestConfigInitUndoesForcedWireChange: a forced change of Backend.VNI or
// Backend.Port can be undone while no agent has restarted on it: config
// init judges a wire change by what the running agents advertise in their
// leases, not by the stored config. Before, after config init --vni 2
// --force, writing VNI 1 back was refused ("changes Backend.VNI 2 → 1 …
// running agents keep the old settings") although every lease still said
// VNI 1, and so was the port. A change that leaves a host on another value,
// one restarted on the forced setting or a flanneld host, whose lease says
// no port, is still refused.
func TestConfigInitUndoesForcedWireChange(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.vxlanLease("10.244.5.0/24", "198.18.0.1", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`)
	c.vxlanLease("10.244.6.0/24", "198.18.0.2", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02","Port":8472}`)
	// A reservation no host has taken runs nothing.
	c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.3")
	init := func(args ...string) []string {
		return append([]string{"config", "init", "--network", "10.244.0.0/16"}, args...)
	}

	c.wantFail(1, init("--vni", "2"), "Backend.VNI 1 → 2", "3 lease(s) or reservation(s)", "--force")
	c.mustRun(init("--vni", "2", "--force")...)
	c.mustRun(init("--vni", "1")...)
	c.mustRun(init("--port", "4789", "--force")...)
	c.mustRun(init()...)

	// A host restarted on the forced VNI advertises it: going back now
	// would leave it apart, and so would a third VNI for all of them.
	c.mustRun(init("--vni", "2", "--force")...)
	c.vxlanLease("10.244.8.0/24", "198.18.0.4", `{"VNI":2,"VtepMAC":"aa:bb:cc:dd:ee:04","Port":8472}`)
	c.wantFail(1, init("--vni", "1"), "Backend.VNI 2 → 1", "4 lease(s) or reservation(s)", "--force", "could not reach each other")
	c.wantFail(1, init("--vni", "3"), "Backend.VNI 1, 2 → 3", "--force")
	// Writing the stored VNI again changes nothing for anyone.
	c.mustRun(init("--vni", "2", "--subnet-len", "25")...)

	// A flanneld host says no port in its lease: it runs the stored one.
	f := newCtl(t)
	f.mustRun("config", "init", "--network", "10.244.0.0/16")
	f.vxlanLease("10.244.5.0/24", "198.18.0.1", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01","Port":8472}`)
	f.mustRun("config", "init", "--network", "10.244.0.0/16", "--port", "4789", "--force")
	f.vxlanLease("10.244.9.0/24", "198.18.0.9", `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:09"}`)
	f.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16"}, "Backend.Port 4789 → 8472", "2 lease(s) or reservation(s)", "--force")
}
