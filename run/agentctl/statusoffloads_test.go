package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusOffloads: a udp agent's offloads (its device's, from /status)
// are shown on a line of their own, saying whether TSO and USO are on, and
// why USO is off where it is; escaped like the agent's other text. An
// agent of another backend, or one older than the field, sends none and
// gets no such line.
func TestStatusOffloads(t *testing.T) {
	for _, tc := range []struct{ offloads, want string }{
		{"csum,tso4,uso4,uso6", "csum,tso4,uso4,uso6 (flannel0: TSO on, USO on)"},
		{"csum,tso4", "csum,tso4 (flannel0: TSO on, USO off: the kernel refused it, as before Linux 6.2, and cuts UDP sends before the device)"},
		{"csum,tso4\n\x1b[2J", `csum,tso4\n\x1b[2J (flannel0: TSO off, USO off: the kernel refused it, as before Linux 6.2, and cuts UDP sends before the device)`},
	} {
		f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "udp", MTU: 1472, Offloads: tc.offloads}}
		code, out, errOut := statusRun(t, f)
		if code != 0 || !regexp.MustCompile(`(?m)^backend +udp\nmtu +1472 .*\noffloads +`+regexp.QuoteMeta(tc.want)+`$`).MatchString(out) {
			t.Errorf("offloads %q: exit %d, want 0 and, under mtu, the line offloads  %s\n%s%s", tc.offloads, code, tc.want, out, errOut)
		}
	}
	f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan", MTU: 1450}}
	if code, out, errOut := statusRun(t, f); code != 0 || strings.Contains(out, "offloads") {
		t.Errorf("status of a vxlan agent: exit %d, want no offloads line\n%s%s", code, out, errOut)
	}
}
