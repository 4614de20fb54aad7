package agent

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/termsafe"
	"github.com/go-logr/logr"
)

// TestEveryReasonSaidOnceEscaped: a reason that quotes what etcd holds is
// kept cut so that it takes at most maxReasonLen bytes once escaped, so a
// hostile first reason (ESC takes 4 bytes escaped) leaves room for the
// others in /readyz and STATUS=, which are cut to maxStatusLen once
// escaped. /status gives each reason as it came but for that cut. Before,
// each reason was cut to maxReasonLen as it came: a lease reason of 1 kB of
// ESC was 4 kB escaped, filled the 3800 bytes, and /readyz and STATUS= did
// not say that subnet.env was not written nor that the peers were not
// programmed.
func TestEveryReasonSaidOnceEscaped(t *testing.T) {
	var sent []string
	h := newHealth(logr.Discard())
	h.notify = func(state string) (bool, error) {
		sent = append(sent, state)
		return true, nil
	}
	const lease = `cannot read the network config: backend type "vxlan`
	const env = "subnet.env not written: replace /run/flannel/subnet.env: "
	h.setLeaseHeld(false, lease+strings.Repeat("\x1b", 2000))
	h.setEtcdRefusesLeases("etcd grants no lease while its NOSPACE alarm is raised")
	h.setSubnetEnvFailed(errors.New("replace /run/flannel/subnet.env: \u202e" + strings.Repeat("\u009b", 2000)))

	// reasonsSaid checks that text (a reason list as sent, escaped) says
	// each reason, each at most maxReasonLen bytes.
	reasonsSaid := func(what, text string) {
		t.Helper()
		parts := strings.Split(text, "; ")
		if len(parts) != 4 ||
			!strings.HasPrefix(parts[0], lease+`\x1b`) || !strings.HasSuffix(parts[0], `\x1b…`) ||
			parts[1] != "etcd grants no lease while its NOSPACE alarm is raised" ||
			!strings.HasPrefix(parts[2], env+`\u202e\u009b`) || !strings.HasSuffix(parts[2], `\u009b…`) ||
			parts[3] != "peers not programmed yet" {
			t.Errorf("%s: %d reasons (%.60q … %q), want the lease's (cut), etcd's refusal, subnet.env's (cut) and the peers'", what, len(parts), text, text[max(0, len(text)-120):])
			return
		}
		for _, p := range []string{parts[0], parts[2]} {
			if len(p) > maxReasonLen {
				t.Errorf("%s: a reason of %d bytes once escaped, want at most %d: %.60q", what, len(p), maxReasonLen, p)
			}
		}
	}

	code, body := probe(t, h.handler(), "GET", "/readyz")
	reason, ok := strings.CutPrefix(strings.TrimSuffix(body, "\n"), "not ok: ")
	if code != 503 || !ok {
		t.Fatalf("/readyz: %d %.60q, want 503 not ok: …", code, body)
	}
	reasonsSaid("/readyz", reason)

	if len(sent) == 0 {
		t.Fatal("no STATUS= sent")
	}
	status, ok := strings.CutPrefix(sent[len(sent)-1], "STATUS=not ready: ")
	if !ok {
		t.Fatalf("sent %.60q, want STATUS=not ready: …", sent[len(sent)-1])
	}
	reasonsSaid("STATUS=", status)

	// /status (NotReadyReason) is the reasons as they came, cut.
	_, raw := h.ready()
	if termsafe.Text(raw) != reason {
		t.Errorf("/status's reasons escaped differ from /readyz's:\n%.200q\n%.200q", termsafe.Text(raw), reason)
	}
	if !strings.HasPrefix(raw, lease+"\x1b") || !strings.Contains(raw, env+"\u202e\u009b") || strings.Contains(raw, `\x1b`) {
		t.Errorf("/status's reasons: %.100q, want them as they came", raw)
	}
}
