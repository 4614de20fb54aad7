package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

// TestStatusConfigPending: while the agent's network config key holds
// something other than the config it runs, agentctl status says so in a
// line of its own, since when, and what the next start does with it; a line
// more when it splits the cluster, and when this host cannot run it. An
// agent whose key means its running config (or older than the field) gets
// no such line. Before, nothing in status showed a pending config, which
// a host that reboots alone days later silently joins.
func TestStatusConfigPending(t *testing.T) {
	answer := func(pending map[string]any) *rawAnswer {
		st := map[string]any{"ready": true, "subnet": "10.244.7.0/24", "publicIP": "198.19.0.1", "backend": "vxlan"}
		if pending != nil {
			st["configPending"] = pending
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return &rawAnswer{b}
	}
	const (
		running = "Network=10.244.0.0/16 SubnetLen=24 SubnetMin=10.244.1.0 SubnetMax=10.244.255.0 Backend.Type=vxlan"
		newCfg  = "Network=10.244.0.0/16 SubnetLen=24 SubnetMin=10.244.1.0 SubnetMax=10.244.255.0 Backend.Type=host-gw"
		why     = "host-gw cannot work behind NAT: the public IP 198.19.0.1 is not eth0's address 198.18.0.1"
		// running with EnableIPv6.
		running6 = "Network=10.244.0.0/16 SubnetLen=24 SubnetMin=10.244.1.0 SubnetMax=10.244.255.0 IPv6Network=fd00:10:244::/56 IPv6SubnetLen=64 IPv6SubnetMin=fd00:10:244:1:: IPv6SubnetMax=fd00:10:244:ff:: Backend.Type=vxlan"
		// The agent's notes (agent/configwatch.go).
		allDirect = "DirectRouting routes to each of this host's 3 peers directly (all on its segment: no VXLAN, so their VNI and Port do not matter), so this host reaches them on the old and the new VNI alike and may restart on its own; a host that joins from another segment needs the same VNI"
		someOff   = "hosts running the old and the new backend do not reach each other over VXLAN: 1 of this host's 3 peers are not on its segment and are cut off from it while one of the two runs the old VNI and the other the new (DirectRouting routes to the other 2 directly, whatever their VNI): restart every host's agentd together, not one at a time"
		ipv6Off   = "hosts on the old and the new EnableIPv6 do not all reach each other (an agent restarted with IPv6 off replaces its dual-stack key by a plain one and skips every dual-stack key of the hosts not yet restarted): restart every host's agentd together, not one at a time"
		ipv6On    = "hosts leased already keep their keys and reach each other on either config, but a host that leases a subnet on the new config (a new host, or one whose lease has gone) gets a dual-stack key that the agents still on the old config skip: restart every host's agentd before such a host joins"
		ipv6Net   = "hosts on the old and the new IPv6Network do not all reach each other (each agent skips the keys whose IPv6 subnet is outside the IPv6Network it started with, and a restarted one moves its key's IPv6 subnet into the new one): restart every host's agentd together, not one at a time"
	)
	for _, c := range []struct {
		pending map[string]any
		want    []string // regexps of whole lines, runs of spaces cut to one
		not     []string // regexps of the start of lines not wanted
	}{
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": newCfg,
			"runningBackend": `{"Type":"vxlan"}`, "newBackend": `{"Type":"host-gw"}`, "incompatible": "Backend.Type", "hostCannotRun": why}, []string{
			`network config pending since 2026-12-06 05:00:00Z, .* ago: the key holds ` + regexp.QuoteMeta(newCfg+` {"Type":"host-gw"}, this agent runs `+running+` {"Type":"vxlan"}: a restart applies it`),
			`splits the cluster Backend.Type differs: hosts on the old and the new config do not all reach each other; restart every host's agentd together, not one at a time`,
			`this host cannot run it a restart here stops at once: ` + regexp.QuoteMeta(why),
		}, []string{`keys changed`, `note`}},
		// The agent's note says what splits, and what does not.
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": running,
			"runningBackend": `{"Type":"vxlan","DirectRouting":true}`, "newBackend": `{"Type":"vxlan","DirectRouting":true,"VNI":2}`,
			"changed": "Backend", "note": allDirect}, []string{
			`keys changed Backend`,
			`note ` + regexp.QuoteMeta(allDirect),
		}, []string{`splits the cluster`}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": running,
			"runningBackend": `{"Type":"vxlan","DirectRouting":true}`, "newBackend": `{"Type":"vxlan","DirectRouting":true,"VNI":2}`,
			"changed": "Backend", "incompatible": "Backend.VNI", "note": someOff}, []string{
			`keys changed Backend`,
			`splits the cluster Backend.VNI differs: ` + regexp.QuoteMeta(someOff),
		}, []string{`note`}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running6, "new": running,
			"changed": "EnableIPv6", "incompatible": "EnableIPv6", "note": ipv6Off}, []string{
			`keys changed EnableIPv6`,
			`splits the cluster EnableIPv6 differs: ` + regexp.QuoteMeta(ipv6Off),
		}, []string{`note`}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": running6,
			"changed": "EnableIPv6", "note": ipv6On}, []string{
			`keys changed EnableIPv6`,
			`note ` + regexp.QuoteMeta(ipv6On),
		}, []string{`splits the cluster`}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running6, "new": running6,
			"changed": "IPv6Network,IPv6SubnetMin,IPv6SubnetMax", "incompatible": "IPv6Network", "note": ipv6Net}, []string{
			`keys changed IPv6Network, IPv6SubnetMin, IPv6SubnetMax`,
			`splits the cluster IPv6Network differs: ` + regexp.QuoteMeta(ipv6Net),
		}, nil},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "invalid": `config: "SubnetLen": 31 is longer than /30`}, []string{
			`network config pending since .*: the key is invalid: a restart fails with config: "SubnetLen": 31 is longer than /30`,
		}, nil},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "deleted": true}, []string{
			`network config pending since .*: the key is deleted: a restart waits for it, not ready`,
		}, nil},
	} {
		code, out, errOut := statusRaw(t, answer(c.pending))
		var lines []string
		for l := range strings.Lines(out) {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		for _, w := range c.want {
			re := regexp.MustCompile(`(?m)^` + w + `$`)
			if code != 0 || !re.MatchString(strings.Join(lines, "\n")) {
				t.Errorf("status with configPending %v: exit %d, want 0 and a line %s\n%s%s", c.pending, code, re, out, errOut)
			}
		}
		for _, n := range c.not {
			if re := regexp.MustCompile(`(?m)^` + n + ` `); re.MatchString(strings.Join(lines, "\n")) {
				t.Errorf("status with configPending %v: a line %s, want none\n%s", c.pending, re, out)
			}
		}
	}
	forged := map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": "x\nready  yes\x1b[2J",
		"changed": "Backend\nready  yes", "note": "n\nready  yes\x1b[2J"}
	if _, out, _ := statusRaw(t, answer(forged)); !strings.Contains(out, `the key holds x\nready  yes\x1b[2J`) ||
		!strings.Contains(out, `Backend\nready  yes`) || !strings.Contains(out, `n\nready  yes\x1b[2J`) || strings.Count(out, "\nready") != 0 {
		t.Errorf("a config's text with control characters is not escaped:\n%s", out)
	}
	if code, out, errOut := statusRaw(t, answer(nil)); code != 0 || strings.Contains(out, "pending") {
		t.Errorf("status of an agent running the key's config: exit %d, want no pending line\n%s%s", code, out, errOut)
	}
}
