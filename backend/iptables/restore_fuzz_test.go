package iptables

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// FuzzRefusedLine: whatever iptables-restore printed on failure, the line
// of our input quoted in the error is the one it named, read apart from the
// regular expression: the first "Error occurred at line: N" (a rule it could
// not parse) or "line N failed" (after a non-word character or at the
// start: a command the kernel refused), N counted from 1 over data's
// lines; nothing is quoted when N is not one of them, or when there is no
// error. A message naming line k of the input always quotes it.
func FuzzRefusedLine(f *testing.F) {
	const data = "*nat\n:AGENTD-POSTRTG - [0:0]\n-A POSTROUTING -j AGENTD-POSTRTG\n-A AGENTD-POSTRTG -s 10.244.0.0/16 --bogus -j RETURN\nCOMMIT\n"
	for _, msg := range []string{
		// iptables 1.8.9 (nf_tables), an option it does not know.
		"exit status 2: iptables-restore v1.8.9 (nf_tables): unknown option \"--bogus\"\nError occurred at line: 4\nTry `iptables-restore -h' or 'iptables-restore --help' for more information.\n",
		// The kernel refused the transaction at COMMIT.
		"exit status 1: iptables-restore: line 5 failed: No chain/target/match by that name.\n",
		"exit status 4: iptables-restore: line 5 failed\n",
		"exit status 1: Error occurred at line: 9\n", // past the input
		"exit status 1: Error occurred at line: 0\n",
		"exit status 1: Error occurred at line: 99999999999999999999999\n",
		"exit status 1: baseline 3 failed", "exit status 1: line 3 failedline 2 failed", "Another app is currently holding the xtables lock.",
	} {
		f.Add(msg, []byte(data), uint16(3), false)
	}
	f.Add("", []byte(data), uint16(1), true)
	f.Fuzz(func(t *testing.T, msg string, data []byte, k uint16, noErr bool) {
		var err error
		if !noErr {
			err = errors.New(msg)
		}
		got, ok := refusedLine(err, data)
		lines := strings.Split(string(data), "\n")
		n, found := scanRefusedLine(msg)
		want := ""
		if !noErr && found && n >= 1 && n <= len(lines) {
			want = fmt.Sprintf("line %d: %s", n, lines[n-1])
		}
		if ok != (want != "") || got != want {
			t.Fatalf("refusedLine(%q, %q) = %q, %v; want %q", msg, data, got, ok, want)
		}

		// The two forms naming line k.
		for _, m := range []string{"iptables-restore: line " + strconv.Itoa(int(k)) + " failed", "Error occurred at line: " + strconv.Itoa(int(k))} {
			got, ok := refusedLine(errors.New("exit status 1: "+m+"\n"), data)
			if in := k >= 1 && int(k) <= len(lines); ok != in || in && got != fmt.Sprintf("line %d: %s", k, lines[k-1]) {
				t.Fatalf("refusedLine(%q, %q) = %q, %v; want line %d of %d", m, data, got, ok, k, len(lines))
			}
		}
	})
}

// scanRefusedLine finds, without regular expressions, the leftmost
// "Error occurred at line: N" or "line N failed" (this one at the start or
// after a character that is not an ASCII letter, digit or underscore) and
// returns N; found is false when there is none, or N does not fit an int.
func scanRefusedLine(s string) (n int, found bool) {
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	word := func(c byte) bool {
		return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	for i := range len(s) {
		var num string
		if rest := s[i:]; strings.HasPrefix(rest, "Error occurred at line: ") {
			start := i + len("Error occurred at line: ")
			if end := digits(start); end > start {
				num = s[start:end]
			}
		} else if strings.HasPrefix(rest, "line ") && (i == 0 || !word(s[i-1])) {
			start := i + len("line ")
			if end := digits(start); end > start && strings.HasPrefix(s[end:], " failed") {
				num = s[start:end]
			}
		}
		if num != "" {
			v, err := strconv.Atoi(num)
			return v, err == nil
		}
	}
	return 0, false
}
