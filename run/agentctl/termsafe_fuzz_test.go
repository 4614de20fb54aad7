package main

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzTerminalSafeJSON: whatever JSON text agentctl is given to print (an
// agent's answer, a config or lease value from etcd), terminalSafeJSON
// makes of it valid UTF-8 JSON that decodes to the same value, with no rune
// unshown reports but JSON's whitespace (DEL, a C1 control character, a
// format character such as U+202E or U+200B, U+2028); text with nothing to
// escape it leaves as it is.
func FuzzTerminalSafeJSON(f *testing.F) {
	for _, s := range []string{
		`{"ready":true,"interfaceWarning":"a` + "\x9b" + `b` + "\u009b" + `c` + "\x7f" + `d"}`,
		`["\u009b", "\\` + "\u0085" + `", "` + "\ufffd\xed\xa0\x80\xf4\x90\x80\x80" + `"]`,
		`{"Note` + "\u0080\u009f\u00a0" + `": [1, -2.5e3, null, false, "\u001b[2J"]}`,
		`"` + "\xc2" + `"`,
		"{\"a\":\"\x7f\x7f\"}\n",
		`{"hostID":"` + "\u202eyes\u2066\u200b\ufeff\U000e0041\u2028\u2029\u00a0\U0010fffd" + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out := terminalSafeJSON(b)
		if !json.Valid(b) {
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("%q became %q, not valid UTF-8 JSON", b, out)
		}
		for _, r := range string(out) {
			if unshown(r) && !strings.ContainsRune(" \t\n\r", r) {
				t.Fatalf("%q became %q, which holds %U", b, out, r)
			}
		}
		if v, w := decodeAny(t, b), decodeAny(t, out); !reflect.DeepEqual(v, w) {
			t.Fatalf("%q (%#v) became %q (%#v)", b, v, out, w)
		}
		if !bytes.ContainsFunc(b, func(r rune) bool { return r >= 0x7f && !unicode.IsPrint(r) || r == utf8.RuneError }) && !bytes.Equal(b, out) {
			t.Fatalf("%q, with nothing to escape, became %q", b, out)
		}
	})
}

func decodeAny(t *testing.T, b []byte) any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	return v
}
