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
// for the third.
func FuzzSplitTopLevel(f *testing.F) {
	for _, s := range []string{
		"^(eth|en)[0-9]{1,2}$,^bond", `a\,b,c`, "[,],x", "[]],]", "", ",", ",,", `\`, `a\`, `\Qa,b\E,c`, `\Qa,b`, ",|0",
		"^ens\n^eth", "[a,b]\n(c,d)", "x{1,2}\ny", "[],]\nz", "[^],]\nz", "[[:space:],]\nz",
		"x{\ny", "x{,2}\ny", `\pL{2,3}` + "\ny", `[\],]` + "\nz", "^en[[:digit:]]+\n^eth",
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
		for _, re := range list {
			if re == "" || !commasInside(re) {
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

// repetitionWithComma is a repetition count with a comma after a byte that
// does not escape its brace.
var repetitionWithComma = regexp.MustCompile(`([^\\])\{[0-9]+,[0-9]*\}`)
