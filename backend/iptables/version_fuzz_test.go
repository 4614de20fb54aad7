package iptables

import (
	"fmt"
	"math/big"
	"strings"
	"testing"
)

// FuzzParseVersion: whatever `iptables --version` prints (nf_tables and
// legacy builds, pre-1.8 ones without a backend, a wrapper's noise), the
// result agrees with a plain byte scan of the input: the first "v" followed
// by three dot-separated digit runs is the version, the word in parentheses
// right after it (past blanks) the backend, "legacy" when there is none, and
// an error, saying what it was given, when there is no version at all. An
// accepted result printed the way iptables prints it parses back to itself,
// and versionAtLeast judges it as its numbers compare.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{
		"iptables v1.8.9 (nf_tables)\n",
		"iptables v1.8.7 (legacy)\n",
		"ip6tables v1.8.10 (nf_tables)\n",
		"iptables-save v1.8.9 (nf_tables)\n",
		"iptables-legacy-restore v1.8.9 (legacy)\n",
		"iptables v1.6.1\n",
		"ip6tables v1.4.21\n",
		"iptables v1.8.4 (nf_tables): table `nat' is incompatible, use 'nft' tool.\n",
		"iptables v1.8.9 (nf_tables)\r\n",
		"iptables v1.8.9\t(nf_tables)",
		"iptables v1.8.9 ()",
		"iptables v1.8.9 (nf_tables",
		"iptables v1.8.9.1 (nf_tables)",
		"iptables version 1.8.9",
		"iptables v1.8 (nf_tables)",
		"vv1.2.3",
		"iptables: command not found\n",
		"",
		"\x00\xff v",
		"nonsense",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		version, mode, err := parseVersion(s)
		wantVersion, wantMode, ok := scanVersion(s)
		if !ok {
			if err == nil {
				t.Fatalf("parseVersion(%q) = %q, %q; want an error: there is no version", s, version, mode)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "no iptables version in ") {
				t.Fatalf("parseVersion(%q): error %q", s, msg)
			}
			return
		}
		if err != nil || version != wantVersion || mode != wantMode {
			t.Fatalf("parseVersion(%q) = %q, %q, %v; want %q, %q", s, version, mode, err, wantVersion, wantMode)
		}
		if !strings.Contains(s, "v"+version) || mode != "legacy" && !strings.Contains(s, "("+mode+")") {
			t.Fatalf("parseVersion(%q) = %q, %q: not in the input", s, version, mode)
		}
		// What the runner decides by the version agrees with comparing
		// its numbers as numbers, however many digits they have.
		for _, least := range [][3]int{{1, 6, 2}, {1, 8, 0}} {
			if got, want := versionAtLeast(version, least[0], least[1], least[2]), compareVersion(version, least) >= 0; got != want {
				t.Fatalf("versionAtLeast(%q, %d.%d.%d) = %v, want %v", version, least[0], least[1], least[2], got, want)
			}
		}
		printed := fmt.Sprintf("iptables v%s (%s)\n", version, mode)
		if v, m, err := parseVersion(printed); err != nil || v != version || m != mode {
			t.Fatalf("parseVersion(%q) = %q, %q, %v; want %q, %q", printed, v, m, err, version, mode)
		}
	})
}

// compareVersion compares version, three dot-separated digit runs, with v,
// as numbers of any size: -1, 0 or 1.
func compareVersion(version string, v [3]int) int {
	for i, f := range strings.Split(version, ".") {
		n, _ := new(big.Int).SetString(f, 10)
		if c := n.Cmp(big.NewInt(int64(v[i]))); c != 0 {
			return c
		}
	}
	return 0
}

// scanVersion is parseVersion without the regular expression: the first
// "v" followed by digits.digits.digits, then optionally blanks and a
// parenthesised word of ASCII letters, digits and underscores.
func scanVersion(s string) (version, mode string, ok bool) {
	digits := func(i int) int { // end of the digit run at i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	for start := 0; start < len(s); start++ {
		if s[start] != 'v' {
			continue
		}
		i, groups := start+1, 0
		for groups < 3 {
			j := digits(i)
			if j == i {
				break
			}
			groups++
			if groups < 3 {
				if j == len(s) || s[j] != '.' {
					break
				}
				j++
			}
			i = j
		}
		if groups < 3 {
			continue
		}
		version = s[start+1 : i]
		j := i
		for j < len(s) && strings.IndexByte("\t\n\f\r ", s[j]) >= 0 {
			j++
		}
		if j == i || j == len(s) || s[j] != '(' {
			return version, "legacy", true
		}
		k := j + 1
		for k < len(s) && (s[k] == '_' || s[k] >= '0' && s[k] <= '9' || s[k] >= 'a' && s[k] <= 'z' || s[k] >= 'A' && s[k] <= 'Z') {
			k++
		}
		if k == j+1 || k == len(s) || s[k] != ')' {
			return version, "legacy", true
		}
		return version, s[j+1 : k], true
	}
	return "", "", false
}
