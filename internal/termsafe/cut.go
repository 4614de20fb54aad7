package termsafe

import "unicode/utf8"

// Cut is Text(s) cut to at most n bytes (n ≥ 3), for a bound on what is
// written rather than on what came: Text writes a byte as up to four
// (\x9b), a rune of two as six (\u009b). It cuts at the end of a rune or
// of an escape, never inside one (`\u00` would read as text of its own),
// and ends with "…" when it cuts. It is valid UTF-8 whatever s is. It is
// Text(Fit(s, n)).
func Cut(s string, n int) string { return Text(Fit(s, n)) }

// Fit is s cut at the end of a rune (or of a byte that is not UTF-8) so
// that Text of it is at most n bytes (n ≥ 3), ending with "…" when it cuts;
// s itself when Text(s) fits. It is for text kept as it came and escaped
// where it is shown (a reason /status gives in JSON, /readyz and STATUS= as
// Text): a bound of n bytes as it came is up to 4n once escaped. "…" starts
// with no continuation byte, so a cut UTF-8 sequence before it stays a
// stray byte and Text of the result is Text of the prefix, then "…".
func Fit(s string, n int) string {
	size, cut := 0, 0 // len(Text(s[:i])); the last i where "…" fits after it
	for i := 0; i < len(s); {
		_, w := utf8.DecodeRuneInString(s[i:])
		// Text of one rune, or of one byte that is not UTF-8, is its
		// part of Text(s): Text decodes s rune by rune as this does.
		size += len(Text(s[i : i+w]))
		if size > n {
			return s[:cut] + "…"
		}
		i += w
		if size <= n-len("…") {
			cut = i
		}
	}
	return s
}
