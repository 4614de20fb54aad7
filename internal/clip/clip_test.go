package clip

import (
	"errors"
	"io/fs"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestString: a text up to Len bytes is kept as it is; a longer one is cut
// to at most Len bytes of valid UTF-8 (never inside a character, whatever
// its width) ending with "…".
func TestString(t *testing.T) {
	for _, s := range []string{"", "vxlan", strings.Repeat("a", Len), strings.Repeat("é", Len/2)} {
		if got := String(s); got != s {
			t.Errorf("String of %d bytes: %q, want it unchanged", len(s), got)
		}
	}
	for _, s := range []string{
		strings.Repeat("a", Len+1),
		strings.Repeat("a", 1<<20),
		strings.Repeat("é", 1<<19),
		"a" + strings.Repeat("€", Len),
		"ab" + strings.Repeat("𝄞", Len),
		strings.Repeat("\xff", Len+1), // not UTF-8 to begin with: cut, all the same
	} {
		got := String(s)
		if len(got) > Len || !strings.HasSuffix(got, "…") || !strings.HasPrefix(s, strings.TrimSuffix(got, "…")) {
			t.Errorf("String of %d bytes: %d bytes %.20q…, want at most %d, a prefix ending with …", len(s), len(got), got, Len)
		}
		if utf8.ValidString(s) && !utf8.ValidString(got) {
			t.Errorf("String of %d bytes of UTF-8 cut a character: %q", len(s), got[len(got)-10:])
		}
	}
}

// TestError: a long error's text is cut as String cuts it, errors.Is still
// sees the error; a short one, and nil, are returned as they are.
func TestError(t *testing.T) {
	if Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
	short := errors.New("short")
	if Error(short) != short {
		t.Error("a short error is not returned as it is")
	}
	long := &fs.PathError{Op: "open", Path: strings.Repeat("x", 1<<20), Err: fs.ErrNotExist}
	got := Error(long)
	if len(got.Error()) > Len || !strings.HasPrefix(got.Error(), "open xxx") || !errors.Is(got, fs.ErrNotExist) {
		t.Errorf("long error: %d bytes %.20q, errors.Is(fs.ErrNotExist) %t", len(got.Error()), got, errors.Is(got, fs.ErrNotExist))
	}
	var pe *fs.PathError
	if !errors.As(got, &pe) || pe != long {
		t.Error("errors.As does not find the long error")
	}
}
