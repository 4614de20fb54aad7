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
	)
	for _, c := range []struct {
		pending map[string]any
		want    []string // regexps of whole lines, runs of spaces cut to one
	}{
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": newCfg,
			"runningBackend": `{"Type":"vxlan"}`, "newBackend": `{"Type":"host-gw"}`, "incompatible": "Backend.Type", "hostCannotRun": why}, []string{
			`network config pending since 2026-12-06 05:00:00Z, .* ago: the key holds ` + regexp.QuoteMeta(newCfg+` {"Type":"host-gw"}, this agent runs `+running+` {"Type":"vxlan"}: a restart applies it`),
			`splits the cluster Backend.Type differs: hosts on the old and the new config do not reach each other; restart every host's agentd together, not one at a time`,
			`this host cannot run it a restart here stops at once: ` + regexp.QuoteMeta(why),
		}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "invalid": `config: "SubnetLen": 31 is longer than /30`}, []string{
			`network config pending since .*: the key is invalid: a restart fails with config: "SubnetLen": 31 is longer than /30`,
		}},
		{map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "deleted": true}, []string{
			`network config pending since .*: the key is deleted: a restart waits for it, not ready`,
		}},
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
	}
	forged := map[string]any{"since": "2026-12-06T05:00:00Z", "running": running, "new": "x\nready  yes\x1b[2J"}
	if _, out, _ := statusRaw(t, answer(forged)); !strings.Contains(out, `the key holds x\nready  yes\x1b[2J`) || strings.Count(out, "\nready") != 0 {
		t.Errorf("a config's text with control characters is not escaped:\n%s", out)
	}
	if code, out, errOut := statusRaw(t, answer(nil)); code != 0 || strings.Contains(out, "pending") {
		t.Errorf("status of an agent running the key's config: exit %d, want no pending line\n%s%s", code, out, errOut)
	}
}
