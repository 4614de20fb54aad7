package main

import (
	"fmt"
	"io"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// escapes reports whether agentctl writes r escaped in what others wrote:
// whether Go's %q escapes it (strconv.IsPrint is false). That is every rune
// but letters, marks, numbers, punctuation, symbols and the ASCII space:
// the control characters (C0, DEL, C1), which a terminal acts on; the
// format characters (Cf), among them the bidirectional controls
// U+202A–U+202E and U+2066–U+2069, after which a terminal that shows
// bidirectional text reorders the rest of the line (a host ID starting
// with U+202E shows the rest of its leases line backwards), and the
// zero-width U+200B–U+200D, U+2060 and U+FEFF, which hide in a key's name;
// the line and paragraph separators U+2028 and U+2029; the other spaces
// (U+00A0, U+3000), which look like U+0020; private-use and unassigned
// code points, which a font may draw as anything.
func escapes(r rune) bool { return !strconv.IsPrint(r) }

// terminalSafeJSON is b, a JSON text, with every rune that escapes reports
// written as its \uXXXX escape (a UTF-16 surrogate pair above U+FFFF, as
// JSON writes those) and every byte that is not part of valid UTF-8 as
// \ufffd. agentctl prints as JSON what others wrote: lease values and the
// network config (anyone with write access to etcd), an agent's /status
// (whatever answers on --agent). encoding/json escapes only U+0000 to
// U+001F (and <, >, &, U+2028, U+2029), and leaves a json.RawMessage, and
// the agent's answer printed as it came, as they are: a terminal that takes
// U+009B for ESC [ (CSI), or the byte 0x9B for it (one not in UTF-8), would
// act on the rest of the value, and one that shows bidirectional text
// would show what follows U+202E backwards. In valid JSON these characters
// and bytes occur only inside strings (between tokens JSON has only ASCII
// whitespace, left as it is), where an escape stands for the same
// character (encoding/json decodes a byte that is not UTF-8 as U+FFFD), so
// for valid JSON the result is valid JSON of the same value. It returns b
// itself when nothing needs escaping. Written by hand: neither
// encoding/json nor encoding/json/v2's jsontext has an option to escape
// these characters.
func terminalSafeJSON(b []byte) []byte {
	var out []byte
	done := 0 // b[:done] is in out
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf && c != 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if !(r == utf8.RuneError && n == 1) && !escapes(r) {
			i += n
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+16)
		}
		out = append(out, b[done:i]...)
		if r1, r2 := utf16.EncodeRune(r); r1 != utf8.RuneError {
			out = fmt.Appendf(out, `\u%04x\u%04x`, r1, r2)
		} else {
			out = fmt.Appendf(out, `\u%04x`, r)
		}
		i += n
		done = i
	}
	if out == nil {
		return b
	}
	return append(out, b[done:]...)
}

// terminalJSON writes each JSON text written to it through
// terminalSafeJSON: json.Encoder's Encode writes one value (and its newline)
// in one call.
type terminalJSON struct{ w io.Writer }

func (t terminalJSON) Write(p []byte) (int, error) {
	if _, err := t.w.Write(terminalSafeJSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
