package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestStatusAgentAddress: --agent takes the health server's URL, and also
// the host:port that agentd's --healthz-addr (and the DaemonSet's probes)
// name it by, which an operator copies from there.
func TestStatusAgentAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" {
			http.NotFound(w, r)
			return
		}
		json.NewEncoder(w).Encode(agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"})
	}))
	defer srv.Close()
	hostPort := strings.TrimPrefix(srv.URL, "http://")
	_, port, _ := strings.Cut(hostPort, ":")
	for _, addr := range []string{srv.URL, srv.URL + "/", hostPort, "localhost:" + port} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), []string{"status", "--agent", addr}, &out, &errOut, nil)
		if code != 0 || !strings.Contains(out.String(), "10.244.7.0/24") {
			t.Errorf("status --agent %s: exit %d\n%s%s", addr, code, out.String(), errOut.String())
		}
	}
}
