package agent

import (
	"bufio"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

// FuzzHealthServer: the health server answers whoever reaches its port.
// Whatever request line arrives (one net/http reads; it answers 400 to the
// others itself), exactly GET and HEAD of /healthz, /readyz, /status and
// /metrics are answered: 200, or 503 for a probe that fails (/status is
// then JSON of a Status, the probes' body "ok" or "not ok: <reason>"); the
// other methods on those paths get 405 naming GET and HEAD, and nothing
// else gets 200 or 503. No request changes what the probes report.
func FuzzHealthServer(f *testing.F) {
	for _, s := range [][2]string{
		{"GET", "/healthz"}, {"HEAD", "/readyz"}, {"GET", "/status"}, {"GET", "/metrics"},
		{"POST", "/readyz"}, {"DELETE", "/status"}, {"get", "/healthz"}, {"GET", "/"}, {"GET", "/healthz/"},
		{"GET", "/./readyz"}, {"GET", "//status"}, {"GET", "/health%7A"}, {"GET", "/readyz?x=1"},
		{"GET", "http://198.18.0.1:8471/status"}, {"OPTIONS", "*"}, {"CONNECT", "/healthz"}, {"GET", "/metrics#x"},
	} {
		f.Add(s[0], s[1])
	}
	h := newHealth(logr.Discard())
	h.notify = func(string) (bool, error) { return true, nil }
	h.setLeaseHeld(true, "")
	mux := h.handler()
	newObserver().register(mux, h)
	probes := map[string]bool{"/healthz": true, "/readyz": true}
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(method + " " + target + " HTTP/1.1\r\nHost: agent\r\n\r\n")))
		if err != nil {
			return
		}
		ready, why := h.ready()
		alive, whyNot := h.alive()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, req)
		if r, w := h.ready(); r != ready || w != why {
			t.Fatalf("%s %s changed readiness: %v %q → %v %q", method, target, ready, why, r, w)
		}
		if a, w := h.alive(); a != alive || w != whyNot {
			t.Fatalf("%s %s changed liveness: %v %q → %v %q", method, target, alive, whyNot, a, w)
		}

		path := req.URL.Path
		ours := slices.Contains([]string{"/healthz", "/readyz", "/status", "/metrics"}, path)
		get := req.Method == http.MethodGet || req.Method == http.MethodHead
		code, body := rec.Code, rec.Body.String()
		switch {
		case ours && get:
			if code != http.StatusOK && !(probes[path] && code == http.StatusServiceUnavailable) {
				t.Fatalf("%s %s (path %q) = %d %q", method, target, path, code, body)
			}
			switch {
			case path == "/status" && req.Method == http.MethodGet:
				var st Status
				if err := json.Unmarshal([]byte(body), &st); err != nil {
					t.Fatalf("%s %s: %v in %q", method, target, err, body)
				}
			case probes[path] && req.Method == http.MethodGet:
				if (code == http.StatusOK) != (body == "ok\n") || code != http.StatusOK && !strings.HasPrefix(body, "not ok: ") {
					t.Fatalf("%s %s = %d %q", method, target, code, body)
				}
			}
		case ours && req.Method != http.MethodConnect:
			if allow := rec.Header().Get("Allow"); code != http.StatusMethodNotAllowed || !strings.Contains(allow, "GET") || !strings.Contains(allow, "HEAD") {
				t.Fatalf("%s %s (path %q) = %d, Allow %q; want 405 naming GET and HEAD", method, target, path, code, allow)
			}
		default:
			if code == http.StatusOK || code == http.StatusServiceUnavailable {
				t.Fatalf("%s %s (path %q) = %d %q; only GET and HEAD of the four paths are answered", method, target, path, code, body)
			}
		}
	})
}
