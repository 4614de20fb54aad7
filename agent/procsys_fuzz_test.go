package agent

import (
	"regexp"
	"strconv"
	"testing"
)

// FuzzParseProcSysInt: a /proc/sys file of one integer (net.ipv4.ip_forward,
// rp_filter) is read as that integer exactly when it holds it as the
// kernel writes it: decimal, '-' before a negative number and no sign or
// leading zero otherwise, within 32 bits, and a newline; anything else is
// refused.
func FuzzParseProcSysInt(f *testing.F) {
	for _, s := range []string{"0\n", "1\n", "2\n", "-1\n", "2147483647\n", "-2147483648\n", "2147483648\n", "-2147483649\n",
		"1", "01\n", "+1\n", "-0\n", " 1\n", "1 \n", "1\n\n", "", "\n", "-\n", "١\n", "0x1\n", "1_0\n"} {
		f.Add([]byte(s))
	}
	kernel := regexp.MustCompile(`^(0|-?[1-9][0-9]{0,9})\n$`)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseProcSysInt(b)
		want, ok := 0, false
		if kernel.Match(b) {
			n, perr := strconv.ParseInt(string(b[:len(b)-1]), 10, 64)
			want, ok = int(n), perr == nil && n >= -1<<31 && n < 1<<31
		}
		if ok != (err == nil) || ok && v != want {
			t.Fatalf("parseProcSysInt(%q) = %d, %v; want %d: %v", b, v, err, want, ok)
		}
	})
}
