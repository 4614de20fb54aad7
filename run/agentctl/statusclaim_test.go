package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestStatusNetnsClaimNotHeld: an agent that runs without its claim on the
// network namespace (another process holds @agentd-agent, so a second
// agentd there is not refused) gets a line saying so and who holds it, in
// the table, and netnsClaimNotHeld in -o json. It is no datapath fault:
// a ready agent still exits 0. The text is escaped like the agent's other
// text, and an agent that holds its claim (or is older than the field)
// gets no line. Before, nothing in status showed it.
func TestStatusNetnsClaimNotHeld(t *testing.T) {
	const why = "another agentd (pid 4242) took it once the process of another user let it go: two agents run here"
	answer := func(notHeld string) *rawAnswer {
		st := map[string]any{"ready": true, "subnet": "10.244.7.0/24", "publicIP": "198.18.0.1", "backend": "vxlan"}
		if notHeld != "" {
			st["netnsClaimNotHeld"] = notHeld
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		return &rawAnswer{b}
	}
	code, out, errOut := statusRaw(t, answer(why))
	line := regexp.MustCompile(`(?m)^claim on this network namespace +not held: ` + regexp.QuoteMeta(why) + `$`)
	if code != 0 || !line.MatchString(out) {
		t.Errorf("status: exit %d, want 0 and the line %q\n%s%s", code, line, out, errOut)
	}
	code, out, errOut = statusRaw(t, answer(why), "-o", "json")
	var got map[string]any
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got["netnsClaimNotHeld"] != why {
		t.Errorf("status -o json: exit %d, %v, netnsClaimNotHeld %q, want %q\n%s%s", code, err, got["netnsClaimNotHeld"], why, out, errOut)
	}

	forged := "held by\nready  yes\x1b[2J"
	if _, out, _ := statusRaw(t, answer(forged)); !strings.Contains(out, `not held: held by\nready  yes\x1b[2J`) || strings.Count(out, "\nready") != 0 {
		t.Errorf("a holder's text with control characters is not escaped:\n%s", out)
	}

	// An agent that holds its claim, or is older than the field.
	if code, out, errOut := statusRaw(t, answer("")); code != 0 || strings.Contains(out, "claim") {
		t.Errorf("status of an agent holding its claim: exit %d, want no claim line\n%s%s", code, out, errOut)
	}
}

// rawAnswer is a health server in memory that answers /status with its
// bytes, as an agent of any version writes them.
type rawAnswer struct{ body []byte }

func (f *rawAnswer) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(bytes.NewReader(f.body)), Request: r}, nil
}

func statusRaw(t *testing.T, f *rawAnswer, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := runWith(context.Background(), append([]string{"status"}, args...), &out, &errOut, nil, &http.Client{Transport: f})
	return code, out.String(), errOut.String()
}
