package main

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusAgentPortZero: agentd given a --healthz-addr (or
// AGENTD_HEALTHZ_ADDR) with port 0 listens on a port the kernel picks,
// which only its log ("health server listening" addr=) and the kernel's
// sockets name. status refuses that address with a usage error naming what
// to give (--agent with the port agentd listens on) and where to find it,
// and asks nothing: before, it asked port 0 (a connection refused, exit 1,
// "is agentd running with --healthz-addr?").
func TestStatusAgentPortZero(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  string
		args []string
		want []string
	}{
		{name: "AGENTD_HEALTHZ_ADDR", env: "127.0.0.1:0",
			want: []string{`AGENTD_HEALTHZ_ADDR "127.0.0.1:0" has the kernel pick the health server's port`, "give --agent 127.0.0.1:PORT", "ss -tlnp", `the addr= of agentd's log line "health server listening"`}},
		{name: "every address", env: ":00",
			want: []string{`AGENTD_HEALTHZ_ADDR ":00" has the kernel pick`, "give --agent 127.0.0.1:PORT"}},
		{name: "--agent", args: []string{"--agent", "127.0.0.1:0"},
			want: []string{`--agent "127.0.0.1:0": port 0 is no port a server listens on`, "ss -tlnp", `the addr= of agentd's log line "health server listening"`}},
		{name: "--agent URL", args: []string{"--agent", "http://[::1]:0/"},
			want: []string{`--agent "http://[::1]:0/": port 0`}},
		// --agent wins over the variable, which is not judged then.
		{name: "--agent wins", env: "127.0.0.1:0", args: []string{"--agent", "127.0.0.1:0"},
			want: []string{`--agent "127.0.0.1:0": port 0`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT", "FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT"} {
				t.Setenv(k, "")
			}
			t.Setenv("AGENTD_HEALTHZ_ADDR", tc.env)
			f := &agentAnswers{st: agent.Status{Ready: true}}
			code, _, errOut := statusRun(t, f, tc.args...)
			if code != exitUsage || len(f.asked) != 0 || strings.Count(errOut, "\n") != 1 {
				t.Errorf("status %q with AGENTD_HEALTHZ_ADDR=%s: exit %d, asked %q, said %q; want %d on one line, nothing asked", tc.args, tc.env, code, f.asked, errOut, exitUsage)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("status %q with AGENTD_HEALTHZ_ADDR=%s said %q, want %q in it", tc.args, tc.env, errOut, w)
				}
			}
		})
	}
}

// TestStatusAgentPort: status's --agent is refused (64) with a port that no
// server can listen on, as agentd's --healthz-addr is, where it was asked
// before: 99999 failed with "invalid port" (exit 1), and an empty port
// after the colon asked port 80. An IPv6 address with a zone, which agentd
// listens on, is asked with the zone written as a URL writes it; it was
// refused ("invalid URL escape"), from --agent and from the variable.
func TestStatusAgentPort(t *testing.T) {
	for _, bad := range []string{"127.0.0.1:99999", "http://127.0.0.1:65536/", "127.0.0.1:", "http://localhost:/"} {
		f := &agentAnswers{st: agent.Status{Ready: true}}
		code, _, errOut := statusRun(t, f, "--agent", bad)
		if code != exitUsage || len(f.asked) != 0 || !strings.Contains(errOut, "want a number from 1 to 65535") {
			t.Errorf("status --agent %q: exit %d, asked %q, said %q; want %d, nothing asked", bad, code, f.asked, errOut, exitUsage)
		}
	}
	for _, tc := range []struct {
		name, env string
		args      []string
	}{
		{name: "--agent", args: []string{"--agent", "[fe80::1%eth0]:8471"}},
		{name: "AGENTD_HEALTHZ_ADDR", env: "[fe80::1%eth0]:8471"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"AGENTD_HEALTHZ_IP", "AGENTD_HEALTHZ_PORT", "FLANNELD_HEALTHZ_ADDR", "FLANNELD_HEALTHZ_IP", "FLANNELD_HEALTHZ_PORT"} {
				t.Setenv(k, "")
			}
			t.Setenv("AGENTD_HEALTHZ_ADDR", tc.env)
			f := &agentAnswers{st: agent.Status{Ready: true}}
			code, out, errOut := statusRun(t, f, tc.args...)
			if want := "http://[fe80::1%25eth0]:8471/status"; code != 0 || len(f.asked) != 1 || f.asked[0] != want {
				t.Errorf("status %q with AGENTD_HEALTHZ_ADDR=%s: exit %d, asked %q, want %s\n%s%s", tc.args, tc.env, code, f.asked, want, out, errOut)
			}
		})
	}
}
