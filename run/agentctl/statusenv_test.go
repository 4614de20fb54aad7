package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusAgentFromEnvironment: `agentctl status` asks the health server
// agentd serves as it takes its address from the environment, so sourcing
// a host's /etc/agentd/agentd.env (set -a; . /etc/agentd/agentd.env; set
// +a, as for the etcd flags) points it at the host's agent: AGENTD_ before
// FLANNELD_, HEALTHZ_ADDR before flanneld's HEALTHZ_IP with HEALTHZ_PORT,
// an address on every interface asked on loopback, and --agent winning
// over all. Before 2026-12-06 status asked 127.0.0.1:8471 whatever
// AGENTD_HEALTHZ_ADDR said.
func TestStatusAgentFromEnvironment(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string // the URL asked
	}{
		{name: "none", want: "http://127.0.0.1:8471/status"},
		{name: "agentd.env", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471"}, want: "http://127.0.0.1:9471/status"},
		{name: "flag wins", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471"}, args: []string{"--agent", "127.0.0.2:8471"}, want: "http://127.0.0.2:8471/status"},
		{name: "flag wins, single dash", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471"}, args: []string{"-agent=127.0.0.2:8471"}, want: "http://127.0.0.2:8471/status"},
		{name: "AGENTD_ before FLANNELD_", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, want: "http://127.0.0.1:9471/status"},
		{name: "FLANNELD_", env: map[string]string{"FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, want: "http://127.0.0.1:9472/status"},
		{name: "empty is unset", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, want: "http://127.0.0.1:9472/status"},
		{name: "every address", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "0.0.0.0:9471"}, want: "http://127.0.0.1:9471/status"},
		{name: "every IPv6 address", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "[::]:9471"}, want: "http://[::1]:9471/status"},
		{name: "no host", env: map[string]string{"AGENTD_HEALTHZ_ADDR": ":9471"}, want: "http://127.0.0.1:9471/status"},
		{name: "flanneld's port", env: map[string]string{"FLANNELD_HEALTHZ_PORT": "9473"}, want: "http://127.0.0.1:9473/status"},
		{name: "flanneld's ip and port", env: map[string]string{"FLANNELD_HEALTHZ_IP": "127.0.0.3", "FLANNELD_HEALTHZ_PORT": "9473"}, want: "http://127.0.0.3:9473/status"},
		{name: "addr wins over port", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "127.0.0.1:9471", "AGENTD_HEALTHZ_PORT": "9473"}, want: "http://127.0.0.1:9471/status"},
		{name: "best source decides", env: map[string]string{"AGENTD_HEALTHZ_PORT": "9473", "FLANNELD_HEALTHZ_ADDR": "127.0.0.1:9472"}, want: "http://127.0.0.1:9473/status"},
		{name: "port 0 is off", env: map[string]string{"FLANNELD_HEALTHZ_PORT": "0"}, want: "http://127.0.0.1:8471/status"},
		{name: "host name", env: map[string]string{"AGENTD_HEALTHZ_ADDR": "localhost:9471"}, want: "http://localhost:9471/status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AGENTD_HEALTHZ_ADDR", "AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT", "FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT"} {
				t.Setenv(k, tc.env[k])
			}
			f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
			code, out, errOut := statusRun(t, f, tc.args...)
			if code != 0 || len(f.asked) != 1 || f.asked[0] != tc.want {
				t.Errorf("status %q with %v: exit %d, asked %q, want %s\n%s%s", tc.args, tc.env, code, f.asked, tc.want, out, errOut)
			}
		})
	}

	// A value that names no health server is a usage error naming the
	// variable, not --agent, and nothing is asked.
	for _, tc := range []struct{ env, value, want string }{
		{"AGENTD_HEALTHZ_ADDR", "ftp://127.0.0.1:9471", `invalid AGENTD_HEALTHZ_ADDR "ftp://127.0.0.1:9471"`},
		{"FLANNELD_HEALTHZ_PORT", "x", `invalid FLANNELD_HEALTHZ_PORT "x"`},
		{"FLANNELD_HEALTHZ_PORT", "70000", `invalid FLANNELD_HEALTHZ_PORT "70000": want a port`},
		{"FLANNELD_HEALTHZ_IP", "]", `invalid FLANNELD_HEALTHZ_IP "]": neither an IP address nor a host name`},
	} {
		t.Setenv("AGENTD_HEALTHZ_ADDR", "")
		t.Setenv("FLANNELD_HEALTHZ_PORT", "")
		t.Setenv("FLANNELD_HEALTHZ_IP", "")
		if tc.env == "FLANNELD_HEALTHZ_IP" {
			t.Setenv("FLANNELD_HEALTHZ_PORT", "9473")
		}
		t.Setenv(tc.env, tc.value)
		f := &agentAnswers{}
		code, _, errOut := statusRun(t, f)
		if code != exitUsage || !strings.Contains(errOut, tc.want) || len(f.asked) != 0 {
			t.Errorf("status with %s=%s: exit %d, asked %q, said %q; want %d saying %q", tc.env, tc.value, code, f.asked, errOut, exitUsage, tc.want)
		}
	}
}
