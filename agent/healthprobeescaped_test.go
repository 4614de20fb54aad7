package agent

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd/internal/termsafe"
	"github.com/go-logr/logr"
)

// TestProbeReasonBoundedOnceEscaped: /readyz's body and STATUS= are bounded
// as sent, once escaped, not as the reasons came: each reason is cut to
// maxReasonLen bytes, but ESC takes 4 escaped (\x1b), U+202E 6 for its 3
// (\u202e). Each reason is cut after a whole escape, never inside one, and
// ends with "…" (TestEveryReasonSaidOnceEscaped: each is now cut to
// maxReasonLen once escaped). Before, two such reasons made a /readyz body
// of 7881 bytes, and STATUS= was cut inside an escape (`\x1…`).
func TestProbeReasonBoundedOnceEscaped(t *testing.T) {
	var sent []string
	h := newHealth(logr.Discard())
	h.notify = func(state string) (bool, error) {
		sent = append(sent, state)
		return true, nil
	}
	// Its length puts the reason's cut (1021 bytes once escaped, then
	// "…"), and before it STATUS='s (3797), inside an escape had it been
	// cut as bytes.
	const lease = `cannot read the network config: backend type "vxlan`
	h.setLeaseHeld(false, lease+strings.Repeat("\x1b", 2000))
	h.setSubnetEnvFailed(errors.New("replace /run/flannel/subnet.env: \u202e" + strings.Repeat("\x1b", 2000)))

	// escapesCut says whether text is prefix followed by whole \x1b
	// escapes, at least one, and the end.
	escapesCut := func(text, prefix, end string) bool {
		rest, ok := strings.CutPrefix(text, prefix)
		if !ok {
			return false
		}
		if rest, ok = strings.CutSuffix(rest, end); !ok {
			return false
		}
		return len(rest) >= 4 && rest == strings.Repeat(`\x1b`, len(rest)/4)
	}
	code, body := probe(t, h.handler(), "GET", "/readyz")
	if code != 503 || len(body) >= 4096 || !utf8.ValidString(body) || strings.ContainsFunc(strings.TrimSuffix(body, "\n"), termsafe.Escapes) {
		t.Errorf("/readyz: %d, %d bytes (valid UTF-8: %v): %.100q…; want 503 under 4096 bytes of UTF-8 with nothing for a terminal to act on", code, len(body), utf8.ValidString(body), body)
	}
	if first, _, _ := strings.Cut(body, "; "); !escapesCut(first, "not ok: "+lease, "…") {
		t.Errorf("/readyz: %.100q, want the lease reason's escapes whole, then …", body)
	}

	if len(sent) == 0 {
		t.Fatal("no STATUS= sent")
	}
	msg := sent[len(sent)-1]
	if len(msg) >= 4096 || !utf8.ValidString(msg) || !escapesCut(strings.Split(msg, "; ")[0], "STATUS=not ready: "+lease, "…") {
		t.Errorf("sent %d bytes (valid UTF-8: %v): %.100q; want under 4096, the lease reason's escapes whole, then …", len(msg), utf8.ValidString(msg), msg)
	}
}
