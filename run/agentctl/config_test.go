package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigInitSubnetLenChange: changing SubnetLen applies to new leases
// only, and the agents keep routing to leases of the old length, so it is
// written while they live; so is a SubnetMin that leaves them out of the
// pool. A network that no longer holds them is refused, counting the
// reservation with the lease.
func TestConfigInitSubnetLenChange(t *testing.T) {
	c := newCtl(t)
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.2")

	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "23")
	if v, _, _ := c.get(prefix + "/config"); !strings.Contains(v, `"SubnetLen":23`) {
		t.Errorf("the SubnetLen change was not written: %s", v)
	}
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--subnet-len", "25", "--subnet-min", "10.244.100.0")
	c.mustRun("config", "init", "--network", "10.244.0.0/20", "--subnet-len", "23")

	c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"},
		"invalidate 2 lease(s) or reservation(s)", "10.244.5.0-24", "10.244.7.0-24", "--force")
	// 10.244.5.0/24 lies inside 10.244.4.0/23 but is wider than its /25 to /30.
	c.wantFail(1, []string{"config", "init", "--network", "10.244.4.0/23"},
		"invalidate 2 lease(s) or reservation(s)", "10.244.5.0/24 is not a /25 to /30 of the network 10.244.4.0/23")
}

// TestConfigInitRefusesWireChange: running agents keep their VNI, port and
// direct routing until restarted, so a change of them while leases or
// reservations exist is refused, naming the change, and written only with
// --force.
func TestConfigInitRefusesWireChange(t *testing.T) {
	c := newCtl(t)
	out := c.mustRun("config", "init", "--network", "10.244.0.0/16")
	if !strings.Contains(out, "Backend.Type=vxlan Backend.VNI=1 Backend.Port=8472 Backend.DirectRouting=false") {
		t.Errorf("init output lacks the vxlan settings: %q", out)
	}
	// With nothing leased, any change is fine.
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "3")
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--vni", "2"}, "Backend.VNI 1 → 2"},
		{[]string{"--port", "4789"}, "Backend.Port 8472 → 4789"},
		{[]string{"--direct-routing"}, "Backend.DirectRouting false → true"},
	} {
		args := append([]string{"config", "init", "--network", "10.244.0.0/16"}, tc.args...)
		// Hosts on either DirectRouting setting reach each other where
		// reverse-path filtering is not strict; other keys split the
		// cluster.
		why := "could not reach each other"
		if tc.args[0] == "--direct-routing" {
			why = "reach each other only where reverse-path filtering is loose or off on the interfaces their packets come in on, the underlay's and flannel.1 " +
				"(the kernel takes the larger of net.ipv4.conf.all.rp_filter and the interface's: all at 2 on every host makes both loose; 1, strict, drops their traffic)"
		}
		c.wantFail(1, args, tc.want, "1 lease(s) or reservation(s)", "--force", why)
	}
	// The defaults written out change nothing.
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "1", "--port", "8472")
	out = c.mustRun("config", "init", "--network", "10.244.0.0/16", "--vni", "2", "--force")
	if !strings.Contains(out, "Backend.VNI=2") {
		t.Errorf("forced init output: %q", out)
	}

	// udp: the backend type, under a reservation that names no backend
	// type (its Port: TestConfigInitUDPPortRolls).
	u := newCtl(t)
	u.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp")
	u.mustRun("lease", "reserve", "10.244.7.0/24", "--public-ip", "198.18.0.2")
	u.wantFail(1, []string{"config", "init", "--network", "10.244.0.0/16", "--backend", "host-gw"},
		"Backend.Type udp → host-gw", "1 lease(s) or reservation(s)")
	if out := u.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "8285"); !strings.Contains(out, "Backend.Port=8285") {
		t.Errorf("udp init output: %q", out)
	}
}

// TestConfigInitWithoutConfigChecksLeases: leases outlive a deleted config;
// writing it again with a network that no longer holds them is refused.
func TestConfigInitWithoutConfigChecksLeases(t *testing.T) {
	c := newCtl(t)
	c.liveLease("10.244.5.0/24", "198.18.0.1", "aa:bb:cc:dd:ee:01")
	c.wantFail(1, []string{"config", "init", "--network", "10.245.0.0/16"},
		"invalidate 1 lease(s) or reservation(s)", "10.244.5.0-24", "--force")
	if _, _, ok := c.get(prefix + "/config"); ok {
		t.Error("the refused config was written")
	}
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
}

// TestConfigInitRefusesWhatAgentdRefuses: config init judges the Backend
// object as agentd does when it starts (a backend type it has, options that
// backend takes). A mistyped type or an out-of-range VNI or port used to be
// written, and every agent started afterwards exited with "unknown backend
// type" or the option's error; now it is a usage error and nothing is
// written.
func TestConfigInitRefusesWhatAgentdRefuses(t *testing.T) {
	c := newCtl(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--backend", "vxaln"}, `unknown backend type "vxaln"`},
		{[]string{"--vni", "16777216"}, `"Backend.VNI": 16777216`},
		{[]string{"--port", "70000"}, `"Backend.Port": 70000`},
		{[]string{"--backend", "udp", "--port", "-1"}, `"Backend.Port": -1`},
	} {
		args := append([]string{"config", "init", "--network", "10.244.0.0/16"}, tc.args...)
		c.wantFail(exitUsage, args, "invalid config", tc.want)
		c.wantFail(exitUsage, append(args, "--force"), "invalid config", tc.want)
		if v, _, ok := c.get(prefix + "/config"); ok {
			t.Fatalf("agentctl %v wrote %s", tc.args, v)
		}
	}
	doc := filepath.Join(t.TempDir(), "network.json")
	if err := os.WriteFile(doc, []byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","GBP":true}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	c.wantFail(exitUsage, []string{"config", "init", "--file", doc}, "invalid config", `"Backend.GBP"`)
	if v, _, ok := c.get(prefix + "/config"); ok {
		t.Fatalf("config with GBP written: %s", v)
	}
	// What agentd runs is still written.
	c.mustRun("config", "init", "--network", "10.244.0.0/16", "--backend", "udp", "--port", "8285")
}
