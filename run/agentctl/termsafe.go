package main

import (
	"fmt"
	"io"
	"unicode/utf8"
)

// terminalSafeJSON is b, a JSON text, with every DEL and C1 control
// character (U+007F to U+009F) written as its \u00XX escape and every byte
// that is not part of valid UTF-8 as \ufffd. agentctl prints as JSON what
// others wrote: lease values and the network config (anyone with write
// access to etcd), an agent's /status (whatever answers on --agent).
// encoding/json escapes only U+0000 to U+001F (and <, >, &, U+2028,
// U+2029), and leaves a json.RawMessage, and the agent's answer printed as
// it came, as they are: a terminal that takes U+009B for ESC [ (CSI), or
// the byte 0x9B for it (one not in UTF-8), would act on the rest of the
// value. In valid JSON these characters and bytes occur only inside
// strings, where an escape stands for the same character (encoding/json
// decodes a byte that is not UTF-8 as U+FFFD), so for valid JSON the result
// is valid JSON of the same value. It returns b itself when nothing needs
// escaping. Written by hand: neither encoding/json nor encoding/json/v2's
// jsontext has an option to escape these characters.
func terminalSafeJSON(b []byte) []byte {
	var out []byte
	done := 0 // b[:done] is in out
	for i := 0; i < len(b); {
		if c := b[i]; c < utf8.RuneSelf && c != 0x7f {
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		var esc rune
		switch {
		case r == utf8.RuneError && n == 1:
			esc = utf8.RuneError
		case r >= 0x7f && r <= 0x9f:
			esc = r
		default:
			i += n
			continue
		}
		if out == nil {
			out = make([]byte, 0, len(b)+16)
		}
		out = fmt.Appendf(append(out, b[done:i]...), `\u%04x`, esc)
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
