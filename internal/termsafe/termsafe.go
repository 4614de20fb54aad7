// Package termsafe escapes, in text others wrote, the characters a terminal
// acts on or that hide or reorder what it shows, for agentd's health
// server (/status, /readyz) and agentctl's output alike. What they print
// comes from etcd (lease values and keys, the network config: anyone with
// write access to etcd) and from the kernel (interface names), and is read
// with curl, kubectl exec and agentctl on a terminal.
package termsafe

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Escapes reports whether r is written escaped: whether Go's %q escapes it
// (strconv.IsPrint is false). That is every rune but letters, marks,
// numbers, punctuation, symbols and the ASCII space: the control characters
// (C0, DEL, C1), which a terminal acts on; the format characters (Cf),
// among them the bidirectional controls U+202A–U+202E and U+2066–U+2069,
// after which a terminal that shows bidirectional text reorders the rest of
// the line (a host ID starting with U+202E shows the rest of its leases
// line backwards), and the zero-width U+200B–U+200D, U+2060 and U+FEFF,
// which hide in a key's name; the line and paragraph separators U+2028 and
// U+2029; the other spaces (U+00A0, U+3000), which look like U+0020;
// private-use and unassigned code points, which a font may draw as
// anything.
func Escapes(r rune) bool { return !strconv.IsPrint(r) }

// Text is s with the runes Escapes reports, and the bytes that are not
// UTF-8, written as Go quotes them (\n, \x1b, \u009b, \u202e, \U000e0041,
// \x9b): a newline or tab would break a table or forge a line of it, an
// escape sequence would reach the terminal, as would 0x9B alone, CSI to one
// not in UTF-8, and U+202E would show the rest of the line backwards. It
// returns s itself when nothing needs escaping.
func Text(s string) string { return escape(s, Escapes) }

// Lines is Text but for the newlines, which it keeps: for text written
// on lines of its own, as klog writes a logged value that holds one.
func Lines(s string) string {
	return escape(s, func(r rune) bool { return r != '\n' && Escapes(r) })
}

// escape is s with the runes esc reports, and the bytes that are not
// UTF-8, written as Go quotes them; s itself when there are none.
func escape(s string, esc func(rune) bool) string {
	if !strings.ContainsFunc(s, esc) && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case esc(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// JSON is b, a JSON text, with every rune Escapes reports written as its
// \uXXXX escape (a UTF-16 surrogate pair above U+FFFF, as JSON writes
// those) and every byte that is not part of valid UTF-8 as \ufffd.
// encoding/json escapes only U+0000 to U+001F (and <, >, &, U+2028,
// U+2029), and leaves a json.RawMessage, and a JSON text passed on as it
// came, as they are: a terminal that takes U+009B for ESC [ (CSI), or the
// byte 0x9B for it (one not in UTF-8), would act on the rest of the value,
// and one that shows bidirectional text would show what follows U+202E
// backwards. In valid JSON these characters and bytes occur only inside
// strings (between tokens JSON has only ASCII whitespace, left as it is),
// where an escape stands for the same character (encoding/json decodes a
// byte that is not UTF-8 as U+FFFD), so for valid JSON the result is valid
// JSON of the same value. It returns b itself when nothing needs escaping.
// Written by hand: neither encoding/json nor encoding/json/v2's jsontext
// has an option to escape these characters.
func JSON(b []byte) []byte {
	var out []byte
	done := 0 // b[:done] is in out
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf && c != 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if !(r == utf8.RuneError && n == 1) && !Escapes(r) {
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

// JSONWriter writes each JSON text written to it to W through JSON:
// json.Encoder's Encode writes one value (and its newline) in one call.
type JSONWriter struct{ W io.Writer }

func (t JSONWriter) Write(p []byte) (int, error) {
	if _, err := t.W.Write(JSON(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
