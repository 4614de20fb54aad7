package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusInterfaceWarning: an agent's interfaceWarning (the default
// route's interface chosen while the peers are routed through another) is
// shown on a line of its own, escaped like the agent's other text; an
// agent without one, or older than the field, shows no such line.
func TestStatusInterfaceWarning(t *testing.T) {
	const warning = "eth0 was chosen as the default route's interface (no --iface), but 2 of 2 peers' public IPs are routed through eth1"
	f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.19.0.1", Backend: "vxlan", InterfaceWarning: warning + "\n\x1b[2J"}}
	code, out, errOut := statusRun(t, f)
	if code != 0 || !regexp.MustCompile(`(?m)^interface +`+regexp.QuoteMeta(warning+`\n\x1b[2J`)+`$`).MatchString(out) {
		t.Errorf("status: exit %d, want a line interface with the warning, escaped\n%s%s", code, out, errOut)
	}
	f = &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
	if code, out, errOut := statusRun(t, f); code != 0 || strings.Contains(out, "interface") {
		t.Errorf("status of an agent without a warning: exit %d, want no interface line\n%s%s", code, out, errOut)
	}
}
