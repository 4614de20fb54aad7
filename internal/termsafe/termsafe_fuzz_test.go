package termsafe

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzTerminalSafeJSON: whatever JSON text is to be printed (an agent's
// /status answer, a config or lease value from etcd), JSON makes of it
// valid UTF-8 JSON that decodes to the same value, with no rune unshown
// reports but JSON's whitespace (DEL, a C1 control character, a format
// character such as U+202E or U+200B, U+2028); text with nothing to escape
// it leaves as it is.
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
		out := JSON(b)
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

// unshown reports whether r is a rune that must not be printed as it is:
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

// FuzzText: whatever text is to be printed, Text makes of it valid UTF-8
// with no rune unshown reports, from which strconv.Unquote gives the text
// back once its quotes and backslashes are escaped too; text with nothing
// to escape it leaves as it is.
func FuzzText(f *testing.F) {
	for _, s := range []string{
		"vxlan", "a\x9bb\u009bc\x7fd\ne\tf", "\u202eyes\u2066\u200b\ufeff\U000e0041\u2028\u2029\u00a0\U0010fffd",
		"\x1b]0;owned\x07", `back\slash "quoted" \u202e`, "\xc2", "\xed\xa0\x80", "…é𝄞",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out := Text(s)
		if !utf8.ValidString(out) || strings.ContainsFunc(out, unshown) {
			t.Fatalf("%q became %q", s, out)
		}
		if !strings.ContainsFunc(s, Escapes) && utf8.ValidString(s) && out != s {
			t.Fatalf("%q, with nothing to escape, became %q", s, out)
		}
		// Text leaves backslashes and quotes as they are; escaped too,
		// Go reads the result back as s.
		quoted := Text(strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s))
		if back, err := strconv.Unquote(`"` + quoted + `"`); err != nil || back != s {
			t.Fatalf("%q became %q, read back as %q (%v)", s, quoted, back, err)
		}
	})
}
