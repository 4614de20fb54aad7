package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusIPForwardingOff: an agent's ipForwardingOff (net.ipv4.ip_forward
// is 0 on its host) is shown on a line of its own, escaped like the agent's
// other text, and the status is still that of a ready agent (exit 0); an
// agent without it, or older than the field, shows no such line.
func TestStatusIPForwardingOff(t *testing.T) {
	const why = "net.ipv4.ip_forward=0: this host does not forward its containers' packets to other hosts; set it: sysctl -w net.ipv4.ip_forward=1, and in /etc/sysctl.d/ to keep it"
	f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan", IPForwardingOff: why + "\n\x1b[2J"}}
	code, out, errOut := statusRun(t, f)
	if code != 0 || !regexp.MustCompile(`(?m)^ip forwarding +OFF: `+regexp.QuoteMeta(why+`\n\x1b[2J`)+`$`).MatchString(out) {
		t.Errorf("status: exit %d, want 0 and a line ip forwarding OFF with the agent's text, escaped\n%s%s", code, out, errOut)
	}
	f = &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
	if code, out, errOut := statusRun(t, f); code != 0 || strings.Contains(out, "forwarding") {
		t.Errorf("status of an agent forwarding: exit %d, want no ip forwarding line\n%s%s", code, out, errOut)
	}
}
