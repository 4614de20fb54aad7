package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// trojan is text a terminal acts on: U+202E (right-to-left override: a
// terminal that shows bidirectional text shows the rest of the line
// backwards), U+009B (CSI, which many UTF-8 terminals take for ESC [) and
// U+200B (zero width).
const trojan = "\u202eyes\u009b31m\u200b"

// wantTerminalSafe fails t when body, an answer of the health server, holds
// a byte that is not UTF-8 or a rune that is not graphic (a control or
// format character, U+2028) other than a newline.
func wantTerminalSafe(t *testing.T, what, body string) {
	t.Helper()
	for i, r := range body {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(body[i:]); n == 1 {
				t.Errorf("%s: byte %#x at %d is not UTF-8:\n%q", what, body[i], i, body)
				return
			}
		}
		if !unicode.IsGraphic(r) && r != '\n' {
			t.Errorf("%s: %U at %d:\n%q", what, r, i, body)
			return
		}
	}
}

// TestStatusEscapesTerminalControls: /status writes the control and format
// characters of what etcd holds (a network config's Backend with U+202E,
// U+009B and U+200B in it, as configPending newBackend quotes it) as JSON
// \u escapes, which decode to the same value: an operator's curl of
// /status to a terminal shows them escaped, and agentctl and any JSON
// reader see no change. Before, encoding/json (which escapes U+0000 to
// U+001F, U+2028 and U+2029 only) wrote them as they are.
func TestStatusEscapesTerminalControls(t *testing.T) {
	running, err := subnet.ParseConfig([]byte(withNetwork(`{"Backend":{"Type":"vxlan"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	o := newObserver()
	h := newHealth(logr.Discard())
	h.notify = func(string) (bool, error) { return true, nil }
	w := &configWatch{log: logr.Discard(), key: "/k/config", running: running,
		check: func(*subnet.Config) error { return nil }, pending: o.configPending, now: time.Now}
	value := withNetwork(`{"Backend":{"Type":"vxlan","MTU":1400,"Note":"` + trojan + `"}}`)
	w.judge([]byte(value), true, 1)
	mux := h.handler()
	o.register(mux, h)

	code, body := probe(t, mux, "GET", "/status")
	wantTerminalSafe(t, "/status", body)
	if !strings.Contains(body, `\u202eyes\u009b31m\u200b`) {
		t.Errorf("/status does not write the Backend's Note as \\u escapes:\n%s", body)
	}
	var st Status
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.ConfigPending == nil ||
		st.ConfigPending.NewBackend != `{"Type":"vxlan","MTU":1400,"Note":"`+trojan+`"}` {
		t.Errorf("/status: %d, %v, configPending %+v\n%s", code, err, st.ConfigPending, body)
	}
}

// TestReadyzEscapesTerminalControls: /readyz's reason writes the control
// and format characters, and the bytes that are not UTF-8, of a reason
// that quotes what etcd holds as Go quotes them (\u202e, \u009b, \x9b, \n),
// as agentctl prints them: kubelet and an operator's curl show the reason
// on one line with nothing a terminal acts on. Before, they went out as
// they are.
func TestReadyzEscapesTerminalControls(t *testing.T) {
	h := newHealth(logr.Discard())
	h.notify = func(string) (bool, error) { return true, nil }
	h.setLeaseHeld(false, "no lease acquired yet: cannot read the network config: "+trojan+"\x9b\nline")
	code, body := probe(t, h.handler(), "GET", "/readyz")
	wantTerminalSafe(t, "/readyz", body)
	want := `not ok: no lease acquired yet: cannot read the network config: \u202eyes\u009b31m\u200b\x9b\nline; subnet.env not written yet; peers not programmed yet` + "\n"
	if code != 503 || body != want {
		t.Errorf("/readyz: %d %q, want 503 %q", code, body, want)
	}
}
