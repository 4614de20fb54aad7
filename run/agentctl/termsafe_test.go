package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/agentd/agentd/agent"
)

// hostile is text a terminal acts on: ESC (here a window title), DEL, and
// U+009B, the C1 control CSI, which many UTF-8 terminals take for ESC [.
const hostile = "\x1b]0;owned\x07\u009b31m\x7f"

// wantNoTerminalControls fails t when out, what agentctl printed, holds a
// byte that is not UTF-8 (0x9B alone is CSI to a terminal not in UTF-8) or
// a rune that is not graphic (unshown) other than a newline or tab.
func wantNoTerminalControls(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(out[i:]); n == 1 {
				t.Errorf("%s: byte %#x at %d is not UTF-8:\n%q", what, out[i], i, out)
				return
			}
		}
		if unshown(r) && r != '\n' && r != '\t' {
			t.Errorf("%s: %U at %d:\n%q", what, r, i, out)
			return
		}
	}
}

// unshown reports whether r is a rune agentctl must not print as it is:
// one not graphic, that is a control character (C0, DEL, C1: a terminal
// acts on it), a format character (Cf: the bidirectional controls
// U+202A–U+202E and U+2066–U+2069 reorder the text after them on a
// terminal that shows bidirectional text, the zero-width U+200B, U+2060
// and U+FEFF hide in it, tag characters U+E0000–U+E007F too), a line or
// paragraph separator (U+2028, U+2029), a private-use or unassigned code
// point. Graphic runes are letters, marks, numbers, punctuation, symbols
// and spaces.
func unshown(r rune) bool {
	return !unicode.IsGraphic(r)
}

// rawAgent is a health server in memory answering /status with its bytes
// as they are.
type rawAgent string

func (b rawAgent) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: http.StatusOK, Status: "200 OK", Body: io.NopCloser(strings.NewReader(string(b))), Request: r}, nil
}

// TestJSONOutputsEscapeTerminalControls: status, leases and config show
// with -o json escape DEL and the C1 control characters (\u007f, \u009b),
// and write a byte that is not UTF-8 as \ufffd, in what the agent or etcd
// holds; the output decodes to the same values. Before, encoding/json
// (which escapes U+0000 to U+001F only) and status, which printed the
// agent's answer as it came, wrote them as they are.
func TestJSONOutputsEscapeTerminalControls(t *testing.T) {
	// status: an answer as agentd's encoder writes it, and one with bytes
	// that are not UTF-8.
	st := agent.Status{Ready: true, Subnet: "10.244.7.0/24", InterfaceWarning: hostile,
		PeersSkipped: []agent.SkippedPeer{{Lease: "10.244.9.0-24", Reason: "backend type " + hostile}}}
	code, out, errOut := statusRun(t, &agentAnswers{st: st}, "-o", "json")
	wantNoTerminalControls(t, "status -o json", out)
	var got agent.Status
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.InterfaceWarning != hostile ||
		len(got.PeersSkipped) != 1 || got.PeersSkipped[0].Reason != "backend type "+hostile {
		t.Errorf("status -o json: exit %d, %v, decodes to %+v\n%s%s", code, err, got, out, errOut)
	}
	var raw strings.Builder
	code = runWith(context.Background(), []string{"status", "-o", "json"}, &raw, io.Discard, nil,
		&http.Client{Transport: rawAgent("{\"ready\":true,\"interfaceWarning\":\"a\x9bb\u009bc\x7fd\"}\n")})
	if want := `{"ready":true,"interfaceWarning":"a\ufffdb\u009bc\u007fd"}` + "\n"; code != 0 || raw.String() != want {
		t.Errorf("status -o json of an answer with 0x9B, U+009B and DEL: exit %d, printed\n%q\nwant\n%q", code, raw.String(), want)
	}

	c := newCtl(t)
	ctx := context.Background()
	note, _ := json.Marshal(hostile) // "\u001b]0;owned\u0007", then U+009B and DEL as they are
	config := `{"Network":"10.244.0.0/16","Note` + "\u009b" + `":"x` + "\x9b" + `y","Backend":{"Type":"vxlan","Note":` + string(note) + `}}`
	if _, err := c.cli.Put(ctx, prefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	out = c.mustRun("config", "show", "-o", "json")
	wantNoTerminalControls(t, "config show -o json", out)
	var doc map[string]any
	err := json.Unmarshal([]byte(out), &doc)
	if backend, _ := doc["Backend"].(map[string]any); err != nil || doc["Note\u009b"] != "x\ufffdy" || backend["Note"] != hostile {
		t.Errorf("config show -o json: %v, decodes to %+v:\n%s", err, doc, out)
	}

	lease, _ := json.Marshal(map[string]string{"PublicIP": "198.18.0.5", "BackendType": "vxlan", "HostID": hostile})
	for k, v := range map[string]string{
		"10.244.5.0-24":          string(lease),
		"10.244.6.0-24\u009b[2J": `{}`,
	} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	out = c.mustRun("leases", "-o", "json")
	wantNoTerminalControls(t, "leases -o json", out)
	var list struct {
		Leases  []leaseRow `json:"leases"`
		Invalid []badRow   `json:"invalid"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Leases) != 1 || list.Leases[0].HostID != hostile ||
		len(list.Invalid) != 1 || list.Invalid[0].Key != prefix+"/subnets/10.244.6.0-24\u009b[2J" {
		t.Errorf("leases -o json: %v, decodes to %+v:\n%s", err, list, out)
	}
}

// TestTextOutputsEscapeTerminalControls: the text agentctl prints from
// etcd escapes control characters as Go quotes them (\x1b, \a, \u009b,
// \x7f) and a byte that is not UTF-8 as \x9b: the host identity of a
// released reservation, a lease's backend type in config init's refusal
// (stderr), a key's name in leases. Before, these three carried them as
// they are (the name when it held no control character). A lease value
// quoted by reserve's refusal and release's line was escaped already (the
// lease parser quotes it).
func TestTextOutputsEscapeTerminalControls(t *testing.T) {
	c := newCtl(t)
	ctx := context.Background()
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	reservation, _ := json.Marshal(map[string]string{"PublicIP": "198.18.0.5", "BackendType": "vxlan" + hostile, "HostID": hostile})
	for k, v := range map[string]string{
		"10.244.5.0-24":        string(reservation),
		"10.244.6.0-24":        `{"PublicIP":"` + "\u009b" + `31m"}`,
		"10.244.7.0-24\x9b[2J": `{}`,
	} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}
	const escaped = `\x1b]0;owned\a\u009b31m\x7f`

	out := c.mustRun("leases")
	wantNoTerminalControls(t, "leases", out)
	if !strings.Contains(out, "invalid: "+prefix+`/subnets/10.244.7.0-24\x9b[2J: `) {
		t.Errorf("leases does not name the key with 0x9B in it as %q:\n%s", `10.244.7.0-24\x9b[2J`, out)
	}

	args := []string{"config", "init", "--network", "10.244.0.0/16", "--subnet-len", "24"}
	_, _, errOut := c.run(args...)
	wantNoTerminalControls(t, "config init's refusal", errOut)
	c.wantFail(1, args, "10.244.5.0-24 (198.18.0.5): backend vxlan"+escaped+", the new config says vxlan")

	args = []string{"lease", "reserve", "10.244.6.0/24", "--public-ip", "198.18.0.8"}
	_, _, errOut = c.run(args...)
	wantNoTerminalControls(t, "lease reserve's refusal", errOut)
	c.wantFail(1, args, "10.244.6.0/24 is held by "+prefix+"/subnets/10.244.6.0-24, whose value is not a lease (", `\u009b31m`)

	out = c.mustRun("lease", "release", "10.244.6.0/24")
	wantNoTerminalControls(t, "lease release of a key with an unusable value", out)
	if !strings.Contains(out, "released 10.244.6.0/24 (a key with an unusable value: ") || !strings.Contains(out, `\u009b31m`) {
		t.Errorf("lease release of a key with an unusable value printed:\n%s", out)
	}

	out = c.mustRun("lease", "release", "10.244.5.0/24")
	wantNoTerminalControls(t, "lease release of a reservation a host has taken", out)
	if !strings.Contains(out, "note: the agent of 198.18.0.5 (host "+escaped+") has taken this reservation") {
		t.Errorf("lease release of a reservation a host has taken printed:\n%s", out)
	}
}
