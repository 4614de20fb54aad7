package agent

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/agentd/agentd/internal/termsafe"
	"github.com/go-logr/logr"
)

// TestStatusNotificationEscaped: STATUS= says a reason that quotes what
// etcd holds with its control and format characters escaped, as /readyz
// does, valid UTF-8 and under PIPE_BUF once escaped. systemd drops a
// notification that is not UTF-8 whole (`systemctl status` then shows the
// last status it took), and prints STATUS= to the terminal of whoever asks.
func TestStatusNotificationEscaped(t *testing.T) {
	var sent []string
	h := newHealth(logr.Discard())
	h.notify = func(state string) (bool, error) {
		sent = append(sent, state)
		return true, nil
	}
	for reason, want := range map[string]string{
		"cannot read the network config: backend type \"vx\u202elan\x1b]0;owned\a\" \x9b": `backend type "vx\u202elan\x1b]0;owned\a" \x9b`,
		// Each U+009B takes 6 bytes escaped: a reason cut to 1 kB is
		// 3 kB then.
		"invalid backend " + strings.Repeat("\u009b", maxReasonLen): `invalid backend \u009b\u009b`,
	} {
		sent = sent[:0]
		h.setLeaseHeld(false, reason)
		h.sendStatus()
		if len(sent) != 1 {
			t.Fatalf("sent %q for a lease not held (%.60q…), want one notification", sent, reason)
		}
		msg := sent[0]
		if !strings.HasPrefix(msg, "STATUS=not ready: ") || !strings.Contains(msg, want) {
			t.Errorf("sent %.200q, want STATUS=not ready: with %q", msg, want)
		}
		if !utf8.ValidString(msg) || len(msg) >= 4096 || strings.ContainsFunc(msg, termsafe.Escapes) {
			t.Errorf("sent %d bytes (valid UTF-8: %v): %.200q…; want under 4096 bytes of UTF-8 with nothing for a terminal to act on", len(msg), utf8.ValidString(msg), msg)
		}
	}
}
