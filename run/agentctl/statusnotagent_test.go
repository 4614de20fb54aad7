package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// notAgent answers every request 404, as etcd's client port, or any other
// HTTP server an --agent may name by mistake, answers GET /status.
type notAgent struct{}

func (notAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusNotFound, Status: "404 Not Found", Body: io.NopCloser(strings.NewReader("404 page not found\n")), Request: r}, nil
}

// TestStatusNotAgent: an --agent that names an HTTP server other than
// agentd's health server (etcd's 198.18.0.254:2379 on the namespace
// cluster) says so and which flag to check, not only "GET …: 404 Not
// Found"; one line, exit 1.
func TestStatusNotAgent(t *testing.T) {
	var out, errOut strings.Builder
	code := runWith(t.Context(), []string{"status", "--agent", "198.18.0.254:2379"}, &out, &errOut, nil, &http.Client{Transport: notAgent{}})
	want := "agentctl: GET http://198.18.0.254:2379/status: 404 Not Found: not agentd's health server; --agent must name the agent's --healthz-addr\n"
	if code != 1 || errOut.String() != want || out.Len() != 0 {
		t.Errorf("exit %d, stderr %q, stdout %q; want 1 and %q", code, errOut.String(), out.String(), want)
	}
}
