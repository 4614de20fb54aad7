package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// agentAnswers is a health server in memory: it records the URL asked and
// answers /status with st. No connection is made.
type agentAnswers struct {
	st    agent.Status
	asked []string
}

func (f *agentAnswers) RoundTrip(r *http.Request) (*http.Response, error) {
	f.asked = append(f.asked, r.URL.String())
	if r.URL.Path != "/status" {
		return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	b, err := json.Marshal(f.st)
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(bytes.NewReader(b)), Request: r}, nil
}

func statusRun(t *testing.T, f *agentAnswers, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runWith(context.Background(), append([]string{"status"}, args...), &out, &errOut, nil, &http.Client{Transport: f})
	return code, out.String(), errOut.String()
}

// TestStatusAgentAddress: --agent takes the health server's URL, and also
// the host:port that agentd's --healthz-addr (and the DaemonSet's probes)
// name it by, which an operator copies from there; anything else is a
// usage error.
func TestStatusAgentAddress(t *testing.T) {
	for _, tc := range []struct{ agent, want string }{
		{"http://127.0.0.1:8471", "http://127.0.0.1:8471/status"},
		{"http://127.0.0.1:8471/", "http://127.0.0.1:8471/status"},
		{"127.0.0.1:8471", "http://127.0.0.1:8471/status"},
		{"localhost:8471", "http://localhost:8471/status"},
		{"[fd00:198:18::1]:8471", "http://[fd00:198:18::1]:8471/status"},
		{"https://node1.example.com:8471", "https://node1.example.com:8471/status"},
	} {
		f := &agentAnswers{st: agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}}
		code, out, errOut := statusRun(t, f, "--agent", tc.agent)
		if code != 0 || !strings.Contains(out, "10.244.7.0/24") || len(f.asked) != 1 || f.asked[0] != tc.want {
			t.Errorf("status --agent %s: exit %d, asked %q (want %s)\n%s%s", tc.agent, code, f.asked, tc.want, out, errOut)
		}
	}
	for _, bad := range []string{"ftp://127.0.0.1:8471", "http://", "127.0.0.1:84 71"} {
		f := &agentAnswers{}
		if code, _, errOut := statusRun(t, f, "--agent", bad); code != exitUsage || len(f.asked) != 0 || !strings.Contains(errOut, "--agent") {
			t.Errorf("status --agent %q: exit %d, asked %q, %s; want %d and nothing asked", bad, code, f.asked, errOut, exitUsage)
		}
	}
}

// TestStatusExitNotReady: status prints the state of an agent that is not
// ready, in either format, and exits 3 with the reason, so that a script can
// wait for readiness; a ready agent gives 0.
func TestStatusExitNotReady(t *testing.T) {
	notReady := agent.Status{Ready: false, NotReadyReason: "no lease acquired yet", PublicIP: "198.18.0.1"}
	for _, output := range []string{"table", "json"} {
		f := &agentAnswers{st: notReady}
		code, out, errOut := statusRun(t, f, "-o", output)
		if code != exitNotReady || !strings.Contains(out, "198.18.0.1") || !strings.Contains(errOut, "not ready: no lease acquired yet") {
			t.Errorf("-o %s, agent not ready: exit %d, want %d\nstdout: %s\nstderr: %s", output, code, exitNotReady, out, errOut)
		}
		f = &agentAnswers{st: agent.Status{Ready: true, PublicIP: "198.18.0.1"}}
		if code, out, errOut := statusRun(t, f, "-o", output); code != 0 || errOut != "" {
			t.Errorf("-o %s, agent ready: exit %d\nstdout: %s\nstderr: %s", output, code, out, errOut)
		}
	}
}
