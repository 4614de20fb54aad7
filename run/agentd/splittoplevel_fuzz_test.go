package main

import (
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// FuzzSplitTopLevel: AGENTD_IFACE_REGEX and FLANNELD_IFACE_REGEX hold a
// comma-separated list of regular expressions, which setFromEnv splits with
// splitTopLevel. Whatever the text, the parts joined by the comma are the
// text again (nothing is lost or added) and no part splits further. And a
// list of regular expressions that compile, each comma of which is escaped
// or inside a bracket expression ("[],]", "[[:space:],]"), a repetition
// count ("{1,2}") or a \Q…\E quote, splits back into exactly that list; a
// brace that Go's regexp takes literally ("x{") opens nothing.
//
// text is the variable's value for the first two; its lines are the list
// for the third, when each line stays apart from the next once joined by a
// comma (see joinsApart).
func FuzzSplitTopLevel(f *testing.F) {
	for _, s := range []string{
		"^(eth|en)[0-9]{1,2}$,^bond", `a\,b,c`, "[,],x", "[]],]", "", ",", ",,", `\`, `a\`, `\Qa,b\E,c`, `\Qa,b`, ",|0",
		"^ens\n^eth", "[a,b]\n(c,d)", "x{1,2}\ny", "[],]\nz", "[^],]\nz", "[[:space:],]\nz",
		"x{\ny", "x{,2}\ny", `\pL{2,3}` + "\ny", `[\],]` + "\nz", "^en[[:digit:]]+\n^eth",
		`\Q` + "\n0", "x{1\n2}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, text string) {
		parts := splitTopLevel(text, ",")
		if got := strings.Join(parts, ","); got != text {
			t.Fatalf("splitTopLevel(%q) = %q, which joins to %q", text, parts, got)
		}
		for _, p := range parts {
			if again := splitTopLevel(p, ","); len(again) != 1 || again[0] != p {
				t.Fatalf("splitTopLevel(%q) gave %q, which splits into %q", text, p, again)
			}
		}
		list := strings.Split(text, "\n")
		for i, re := range list {
			if re == "" || !commasInside(re) {
				return
			}
			if i+1 < len(list) && !joinsApart(re, list[i+1]) {
				return
			}
		}
		joined := strings.Join(list, ",")
		if got := splitTopLevel(joined, ","); !reflect.DeepEqual(got, list) {
			t.Fatalf("splitTopLevel(%q) = %q, want the regular expressions %q", joined, got, list)
		}
	})
}

// commasInside says whether re compiles and each of its commas is escaped
// or inside a bracket expression, a repetition count or a \Q…\E quote:
// with its repetition counts made commaless, a ')' in place of each comma
// still compiles. At the top level, or inside a group, it would not.
func commasInside(re string) bool {
	if _, err := regexp.Compile(re); err != nil {
		return false
	}
	counts := repetitionWithComma.ReplaceAllString(re, "${1}{1}")
	_, err := regexp.Compile(strings.ReplaceAll(counts, ",", ")"))
	return err == nil
}

// joinsApart says whether a and b, both regular expressions, stay two when
// joined by a comma: the comma is not taken into a \Q quote that a leaves
// open to its end (`\Q` alone is an empty quote, `\Q,0` quotes ",0"), and
// a brace that a leaves open does not become a repetition count with b
// ("x{1" and "2}" join into "x{1,2}").
func joinsApart(a, b string) bool {
	return !commasInside(a+",") && !(openCount.MatchString(a) && countEnd.MatchString(b))
}

// openCount is an unescaped brace and digits at the end of a regular
// expression; countEnd is what can close it into a count at the start of
// the next.
var (
	openCount = regexp.MustCompile(`(^|[^\\])\{[0-9]+$`)
	countEnd  = regexp.MustCompile(`^[0-9]*\}`)
)

// repetitionWithComma is a repetition count with a comma after a byte that
// does not escape its brace.
var repetitionWithComma = regexp.MustCompile(`([^\\])\{[0-9]+,[0-9]*\}`)
