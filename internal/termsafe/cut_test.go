package termsafe

import (
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestCut: text whose escaped form fits is Text's; a longer one is cut to
// at most n bytes once escaped, at the end of an escape, never inside one,
// ending with "…".
func TestCut(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"vxlan", 5, "vxlan"},
		{"a\x1bb", 6, `a\x1bb`},
		{"abcdef", 5, "ab…"},
		// Room for a\x9b and …, not for the second escape.
		{"a\x9b\x9b", 8, `a\x9b…`},
		{"a\x9b\x9b", 7, `a…`},
		{"ab\u009b", 7, "ab…"},
		{"é\u202eéé", 11, `é\u202e…`},
		{"\U000e0041x", 10, "…"},
	} {
		if got := Cut(c.s, c.n); got != c.want {
			t.Errorf("Cut(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}

// TestFit: text whose escaped form fits is kept as it came; a longer one is
// cut, as it came, at the end of a rune or stray byte, so that once escaped
// it is at most n bytes with its "…".
func TestFit(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"vxlan", 5, "vxlan"},
		{"a\x1bb", 6, "a\x1bb"},
		{"a\x1bb", 5, "a…"},
		{"abcdef", 5, "ab…"},
		{"a\x9b\x9b", 8, "a\x9b…"},
		{"ab\u009b", 7, "ab…"},
		{"é\u202eéé", 11, "é\u202e…"},
		// A 3-byte rune cut after its first byte: that byte stays
		// stray before "…", which starts with no continuation byte.
		{"ab\xe2\x82", 9, "ab\xe2…"},
	} {
		got := Fit(c.s, c.n)
		if got != c.want || len(Text(got)) > c.n {
			t.Errorf("Fit(%q, %d) = %q (%d bytes escaped), want %q", c.s, c.n, got, len(Text(got)), c.want)
		}
	}
}

// FuzzCut: whatever the text and the bound (3 or more), Cut is at most
// that many bytes of valid UTF-8 with no rune unshown reports, and either
// Text's whole or, before its "…", Text of a prefix of the text: an escape
// is never cut.
func FuzzCut(f *testing.F) {
	for _, s := range []string{"vxlan", "a\x9bb\u009bc\x7fd\ne\tf", "\u202eyes\U000e0041\xc2", strings.Repeat("\x9b", 300)} {
		f.Add(s, 7)
	}
	f.Add("x", math.MinInt) // -n is n itself: n%1000 would be negative
	f.Fuzz(func(t *testing.T, s string, n int) {
		n = 3 + int(uint(n)%1000)
		out := Cut(s, n)
		if fit := Fit(s, n); Text(fit) != out || (fit != s && !strings.HasPrefix(s, strings.TrimSuffix(fit, "…"))) {
			t.Fatalf("Fit(%q, %d) = %q: Text of it is not Cut's %q, or it is not s or a prefix of s and …", s, n, fit, out)
		}
		if len(out) > n || !utf8.ValidString(out) || strings.ContainsFunc(out, unshown) {
			t.Fatalf("Cut(%q, %d) = %q: over %d bytes, not UTF-8 or with a rune to escape", s, n, out, n)
		}
		if out == Text(s) {
			return
		}
		cut, ok := strings.CutSuffix(out, "…")
		if !ok {
			t.Fatalf("Cut(%q, %d) = %q, neither Text(s) nor ending with …", s, n, out)
		}
		for i := 0; ; {
			if Text(s[:i]) == cut {
				return
			}
			if i == len(s) || len(Text(s[:i])) > len(cut) {
				t.Fatalf("Cut(%q, %d) = %q: not Text of a prefix (%q) and …", s, n, out, Text(s))
			}
			_, size := utf8.DecodeRuneInString(s[i:])
			i += size
		}
	})
}
