package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/internal/healthzaddr/healthzaddrtest"
)

// TestStatusAsksWhereAgentdListens: for each environment of
// healthzaddrtest.Cases, which agentd's TestHealthzEnvCases shows agentd
// takes as the case says, agentctl status asks the health server there
// (on loopback when it listens on every address), asks its default when
// agentd runs none, and exits 64 with agentd's refusal when agentd would
// not start. Before 2026-12-07 agentctl had its own copy of agentd's
// rules, and 6 of the cases came out otherwise: the health server's IP
// alone from AGENTD_ turned off FLANNELD_'s address or port, the port was
// not read as agentd's int flag reads it (0x2501, 011), and addresses
// agentd refuses were asked (http://127.0.0.1:9471, and 9471 as the host
// http://9471); 3 more were refused in other words than agentd's.
func TestStatusAsksWhereAgentdListens(t *testing.T) {
	for _, tc := range healthzaddrtest.Cases {
		t.Run(tc.Name, func(t *testing.T) {
			for _, k := range healthzaddrtest.Vars {
				t.Setenv(k, tc.Env[k])
			}
			f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
			code, out, errOut := statusRun(t, f)
			if tc.Err != "" {
				if code != exitUsage || len(f.asked) != 0 || !strings.Contains(errOut, tc.Err) {
					t.Errorf("env %v: exit %d, asked %q, said %q; want %d saying %q", tc.Env, code, f.asked, errOut, exitUsage, tc.Err)
				}
				return
			}
			want := "http://127.0.0.1:8471/status"
			if tc.Listen != "" {
				want = "http://" + loopbackIfAny(tc.Listen) + "/status"
			}
			if code != 0 || len(f.asked) != 1 || f.asked[0] != want {
				t.Errorf("env %v (agentd listens on %q): exit %d, asked %q, want %s\n%s%s", tc.Env, tc.Listen, code, f.asked, want, out, errOut)
			}
		})
	}
}
