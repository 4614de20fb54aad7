package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// FuzzPrintConfig: any config agents accept shows in config show's table as
// its five lines (seven with IPv6), and no rune unshown reports but the
// newlines that end them: a newline in the backend's type, or DEL or a C1
// control character that JSON strings may hold as they are, would forge a
// line or reach the terminal, and a format character such as U+202E would
// show the rest of the line backwards.
func FuzzPrintConfig(f *testing.F) {
	for _, s := range []string{
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		`{"Network":"10.244.0.0/16"}`,
		`{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"host-gw"}}`,
		`{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan","VNI":4096,"Port":4789}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285,"Note":"a\u007fb\u009bc"}}`,
		`{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan\nsubnets\t10.0.0.0 … 10.255.0.0"}}`,
		"{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"udp\",\"Note\":\"\x7f\u009b2J\"}}",
		"{\"Network\":\"10.244.0.0/16\",\"Backend\":{\"Type\":\"vxlan\u202e\u200b\",\"Note\":\"\u2066\ufeff\U000e0041\u00a0\"}}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := subnet.ParseConfig(b)
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := printConfig(&out, "/coreos.com/network/config", cfg); err != nil {
			t.Fatal(err)
		}
		text := out.String()
		if i := strings.IndexFunc(text, func(r rune) bool { return r != '\n' && unshown(r) }); i >= 0 {
			t.Fatalf("config %s prints %q, a rune not shown as it is:\n%s", b, []rune(text[i:])[0], text)
		}
		want := 5
		if cfg.EnableIPv6 {
			want = 7
		}
		lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
		if len(lines) != want || !strings.HasPrefix(lines[want-1], "backend ") {
			t.Fatalf("config %s prints %d lines, want %d ending with the backend's:\n%s", b, len(lines), want, text)
		}
	})
}
