package main

import (
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusAgentIPv4InBrackets: agentd listens on "[198.18.0.1]:8471" as on
// "198.18.0.1:8471" (Go's net.Listen takes brackets around any host), and
// README's recipe for a health server on the pod's IP in the DaemonSet sets
// AGENTD_HEALTHZ_ADDR to "[$(POD_IP)]:8471", brackets that an IPv6 pod IP
// needs. status asks that server too, from --agent or from the variable:
// a URL allows brackets around IPv6 only, so the host:port is rewritten
// without them. Before 2026-12-07 status refused the variable
// (`AGENTD_HEALTHZ_ADDR: "[198.18.0.1]:8471" is no host:port of agentd's
// health server`, exit 64) and --agent ("invalid IP-literal").
func TestStatusAgentIPv4InBrackets(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want string
	}{
		{name: "AGENTD_HEALTHZ_ADDR", env: "[198.18.0.1]:8471", want: "http://198.18.0.1:8471/status"},
		{name: "--agent", args: []string{"--agent", "[198.18.0.1]:8471"}, want: "http://198.18.0.1:8471/status"},
		{name: "IPv6 keeps its brackets", env: "[fd00::1]:8471", want: "http://[fd00::1]:8471/status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT", "FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT"} {
				t.Setenv(k, "")
			}
			t.Setenv("AGENTD_HEALTHZ_ADDR", tc.env)
			f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
			code, out, errOut := statusRun(t, f, tc.args...)
			if code != 0 || len(f.asked) != 1 || f.asked[0] != tc.want {
				t.Errorf("status %q with AGENTD_HEALTHZ_ADDR=%s: exit %d, asked %q, want %s\n%s%s", tc.args, tc.env, code, f.asked, tc.want, out, errOut)
			}
		})
	}
}
