package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentd/agentd/agent"
)

// TestOutputsEscapeFormatCharacters: agentctl's text escapes the
// bidirectional and zero-width format characters (U+202E, U+2066, U+200B,
// U+FEFF, a tag character U+E0041) and the line and paragraph separators
// (U+2028, U+2029) in what etcd or the agent holds, as Go quotes them
// (\u202e, \U000e0041), and its JSON writes them as \u escapes (a
// surrogate pair above U+FFFF) that decode to the same values. Before, they
// went out as they are: a host ID starting with U+202E showed the rest of
// its leases line right to left on a terminal that reorders bidirectional
// text, and U+200B hid in a key's name.
func TestOutputsEscapeFormatCharacters(t *testing.T) {
	const trojan = "\u202eyes  on\u2066\u200b\ufeff\U000e0041\u2028\u2029"
	const escaped = `\u202eyes  on\u2066\u200b\ufeff\U000e0041\u2028\u2029`
	c := newCtl(t)
	ctx := context.Background()
	c.mustRun("config", "init", "--network", "10.244.0.0/16")
	lease, _ := json.Marshal(map[string]any{"PublicIP": "198.18.0.5", "BackendType": "vxlan",
		"BackendData": map[string]any{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}, "HostID": trojan})
	for k, v := range map[string]string{
		"10.244.5.0-24":             string(lease),
		"10.244.6.0-24\u200b\u202e": `{"PublicIP":"198.18.0.6"}`,
	} {
		if _, err := c.cli.Put(ctx, prefix+"/subnets/"+k, v); err != nil {
			t.Fatal(err)
		}
	}

	out := c.mustRun("leases")
	wantNoTerminalControls(t, "leases", out)
	for _, want := range []string{
		"10.244.5.0/24  198.18.0.5  vxlan    aa:bb:cc:dd:ee:ff  " + escaped + "  ",
		"invalid: " + prefix + `/subnets/10.244.6.0-24\u200b\u202e: `,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("leases does not print %q:\n%s", want, out)
		}
	}

	out = c.mustRun("leases", "-o", "json")
	wantNoTerminalControls(t, "leases -o json", out)
	var list struct {
		Leases  []leaseRow `json:"leases"`
		Invalid []badRow   `json:"invalid"`
	}
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list.Leases) != 1 || list.Leases[0].HostID != trojan ||
		len(list.Invalid) != 1 || list.Invalid[0].Key != prefix+"/subnets/10.244.6.0-24\u200b\u202e" {
		t.Errorf("leases -o json: %v, decodes to %+v:\n%s", err, list, out)
	}
	if !strings.Contains(out, `\u202eyes  on\u2066\u200b\ufeff\udb40\udc41\u2028\u2029`) {
		t.Errorf("leases -o json does not write the host ID with \\u escapes:\n%s", out)
	}

	args := []string{"lease", "reserve", "10.244.6.0/24", "--public-ip", "198.18.0.8"}
	_, _, errOut := c.run(args...)
	wantNoTerminalControls(t, "lease reserve's refusal", errOut)

	note, _ := json.Marshal(trojan)
	if _, err := c.cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","Note":`+string(note)+`}}`); err != nil {
		t.Fatal(err)
	}
	out = c.mustRun("config", "show")
	wantNoTerminalControls(t, "config show", out)
	if want := `"Note":"` + escaped + `"`; !strings.Contains(out, want) {
		t.Errorf("config show does not print %q:\n%s", want, out)
	}
	out = c.mustRun("config", "show", "-o", "json")
	wantNoTerminalControls(t, "config show -o json", out)
	var doc struct{ Backend struct{ Note string } }
	if err := json.Unmarshal([]byte(out), &doc); err != nil || doc.Backend.Note != trojan {
		t.Errorf("config show -o json: %v, decodes to %+v:\n%s", err, doc, out)
	}

	st := agent.Status{Ready: true, Subnet: "10.244.7.0/24", InterfaceWarning: trojan,
		PeersSkipped: []agent.SkippedPeer{{Lease: "10.244.9.0-24", Reason: "host " + trojan}}}
	code, out, errOut := statusRun(t, &agentAnswers{st: st})
	wantNoTerminalControls(t, "status", out)
	for _, want := range []string{" " + escaped + "\n", "not programmed: host " + escaped + "\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("status: exit %d, does not print %q:\n%s%s", code, want, out, errOut)
		}
	}
	code, out, errOut = statusRun(t, &agentAnswers{st: st}, "-o", "json")
	wantNoTerminalControls(t, "status -o json", out)
	var got agent.Status
	if err := json.Unmarshal([]byte(out), &got); code != 0 || err != nil || got.InterfaceWarning != trojan ||
		len(got.PeersSkipped) != 1 || got.PeersSkipped[0].Reason != "host "+trojan {
		t.Errorf("status -o json: exit %d, %v, decodes to %+v\n%s%s", code, err, got, out, errOut)
	}
}
