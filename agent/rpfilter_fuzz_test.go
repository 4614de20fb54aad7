package agent

import (
	"strconv"
	"testing"
)

// FuzzParseRPFilter: an rp_filter file of /proc/sys is read as 0, 1 or 2
// exactly when it holds that number in decimal and a newline, as the
// kernel writes it; anything else is refused.
func FuzzParseRPFilter(f *testing.F) {
	for _, s := range []string{"0\n", "1\n", "2\n", "3\n", "1", "01\n", "+1\n", "-0\n", " 1\n", "1\n\n", "", "\n", "١\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseRPFilter(b)
		want := -1
		for _, n := range []int{0, 1, 2} {
			if string(b) == strconv.Itoa(n)+"\n" {
				want = n
			}
		}
		if want < 0 && err == nil || want >= 0 && (err != nil || v != want) {
			t.Fatalf("parseRPFilter(%q) = %d, %v; want %d", b, v, err, want)
		}
	})
}
