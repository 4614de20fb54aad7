package termsafe

import (
	"strings"
	"unicode/utf8"
)

// Cut is Text(s) cut to at most n bytes (n ≥ 3), for a bound on what is
// written rather than on what came: Text writes a byte as up to four
// (\x9b), a rune of two as six (\u009b). It cuts at the end of a rune or
// of an escape, never inside one (`\u00` would read as text of its own),
// and ends with "…" when it cuts. It is valid UTF-8 whatever s is.
func Cut(s string, n int) string {
	t := Text(s)
	if len(t) <= n {
		return t
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		// Text of one rune, or of one byte that is not UTF-8, is its
		// part of Text(s): Text decodes s rune by rune as this does.
		part := Text(s[i : i+size])
		if b.Len()+len(part) > n-len("…") {
			break
		}
		b.WriteString(part)
		i += size
	}
	return b.String() + "…"
}
