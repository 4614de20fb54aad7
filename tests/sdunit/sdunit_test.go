package sdunit

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseEnvironmentFile(t *testing.T) {
	in := strings.Join([]string{
		"# comment",
		"; also a comment",
		`# a comment ending in a backslash \`,
		"NOT=read: systemd before v254 continues the comment here",
		"",
		"A=plain",
		"  B = spaced value   ",
		`C="double \"quoted\" \$x \n"`,
		`D='single $x \n'`,
		`E=back\\slash\ and\`,
		`continued`,
		`F=joined"quoted part"'and more'`,
		"G=",
		"A=second",
		"H=x y\t",
	}, "\n")
	got, err := ParseEnvironmentFile([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []Var{
		{"A", "plain"},
		{"B", "spaced value"},
		{"C", `double "quoted" $x \n`},
		{"D", `single $x \n`},
		{"E", `back\slash andcontinued`},
		{"F", "joinedquoted partand more"},
		{"G", ""},
		{"A", "second"},
		{"H", "x y"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %q\nwant %q", got, want)
	}
	if m := Env(got); m["A"] != "second" {
		t.Errorf("later assignment should win: A=%q", m["A"])
	}
}

func TestParseEnvironmentFileErrors(t *testing.T) {
	for in, want := range map[string]string{
		"A=1\nnoequals\n":  "line 2: no '='",
		"1A=x":             `"1A" is not a valid variable name`,
		"A-B=x":            `"A-B" is not a valid variable name`,
		"A=\"open":         `unterminated " in the value of A`,
		"\n\nA='open\n\n":  `line 3: unterminated ' in the value of A`,
		"export A=1\nB=2":  `"export A" is not a valid variable name`,
		"=value":           `"" is not a valid variable name`,
		"A=1\n  # ok\nB\n": "line 3: no '='",
	} {
		_, err := ParseEnvironmentFile([]byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want an error containing %q", in, err, want)
		}
	}
}

func TestExpandCommand(t *testing.T) {
	env := map[string]string{"ARGS": "-v=2  --ip-masq", "SUBNET": "10.244.5.1/24", "SPACE": "a b", "EMPTY": "",
		"QUOTED": `--label "a b" 'c d'e \"f`, "OPEN": `x "y z`}
	for _, tc := range []struct {
		line   string
		want   []string
		ignore bool
	}{
		// What the project's units use (dist/systemd).
		{"/usr/local/bin/agentd $ARGS", []string{"/usr/local/bin/agentd", "-v=2", "--ip-masq"}, false},
		{"dockerd -H fd:// --bip=${SUBNET} $EMPTY", []string{"dockerd", "-H", "fd://", "--bip=10.244.5.1/24"}, false},
		{"/bin/x $EMPTY $UNSET end", []string{"/bin/x", "end"}, false},
		{"/bin/x --bip=${SUBNET} ${SPACE}", []string{"/bin/x", "--bip=10.244.5.1/24", "a b"}, false},
		{"-/bin/x --price=$$5 $SUBNETx ${UNSET}", []string{"/bin/x", "--price=$5", ""}, true},
		{`/bin/x "quoted word" 'single $$ARGS' "$SPACE"`, []string{"/bin/x", "quoted word", "single $ARGS", "a", "b"}, false},
		{"@/bin/x argv0", []string{"/bin/x", "argv0"}, false},
		// A $NAME value splits at whitespace with its quotes removed; a
		// backslash there takes the next character; an open quote runs
		// to the end.
		{"/bin/x $QUOTED", []string{"/bin/x", "--label", "a b", "c de", `"f`}, false},
		{"/bin/x $OPEN", []string{"/bin/x", "x", "y z"}, false},
		// A lone "$", or $ with a name that is not valid, makes no word.
		{"/bin/x $ $A-B ${A-B} $$A", []string{"/bin/x", "${A-B}", "$A"}, false},
		// Escapes: in "…", in '…' and outside quotes alike; an escaped
		// quote does not end the quoted part.
		{`/bin/x "a\"b"`, []string{"/bin/x", `a"b`}, false},
		{`/bin/x "a\"b" 'c\'d' e\"f "\\" '\\'`, []string{"/bin/x", `a"b`, "c'd", `e"f`, `\`, `\`}, false},
		{`/bin/x "a\tb\nc" 'x\sy' \x41\102\u00e9\U0001F600`, []string{"/bin/x", "a\tb\nc", "x y", "AB\u00e9\U0001F600"}, false},
		// Escapes systemd does not know, and those that would be NUL,
		// are kept with their backslash (systemd warns): "a\ b" is one
		// word with a backslash in it; a space is \s.
		{`/bin/x a\ b "\$x" \q \x00 \8 \x4`, []string{"/bin/x", `a\ b`, `\$x`, `\q`, `\x00`, `\8`, `\x4`}, false},
		{`/bin/x end\`, []string{"/bin/x", `end\`}, false},
		// Quotes may start and end anywhere in a word.
		{`/bin/x --opt="a b"c 'd'"e"f ""`, []string{"/bin/x", "--opt=a bc", "def", ""}, false},
		// Whitespace is space, tab, newline and carriage return.
		{"/bin/x\ta\nb\r c", []string{"/bin/x", "a", "b", "c"}, false},
		// Prefixes are read after quote removal, each at most once; ":"
		// turns expansion off.
		{`"-/bin/x" a`, []string{"/bin/x", "a"}, true},
		{"--/bin/x", []string{"-/bin/x"}, true},
		{"-@+/bin/x a", []string{"/bin/x", "a"}, true},
		{"!!-/bin/x", []string{"/bin/x"}, true},
		{"+!/bin/x", []string{"!/bin/x"}, false},
		{":-/bin/x $ARGS ${SUBNET} $$", []string{"/bin/x", "$ARGS", "${SUBNET}", "$$"}, true},
	} {
		got, err := ExpandCommand(tc.line, env)
		if err != nil {
			t.Errorf("%q: %v", tc.line, err)
			continue
		}
		if !reflect.DeepEqual(got.Argv, tc.want) || got.IgnoreFailure != tc.ignore {
			t.Errorf("%q:\n got  %q ignore=%v\n want %q ignore=%v", tc.line, got.Argv, got.IgnoreFailure, tc.want, tc.ignore)
		}
	}
	for bad, want := range map[string]string{
		"":              "empty command line",
		"  \n":          "empty command line",
		`/bin/x "open`:  "unterminated \"",
		`/bin/x 'open`:  "unterminated '",
		`/bin/x "a\"`:   "unterminated \"",
		`/bin/x "a\`:    "unterminated \"",
		"-":             "no program",
		"- /bin/x":      "no program",
		`""`:            "no program",
		"$EMPTY $UNSET": "expands to no words",
	} {
		if c, err := ExpandCommand(bad, env); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %q, %v; want an error containing %q", bad, c.Argv, err, want)
		}
	}
}

func TestLoadDropIn(t *testing.T) {
	dir := t.TempDir()
	main := filepath.Join(dir, "x.service")
	drop := filepath.Join(dir, "x.conf")
	os.WriteFile(main, []byte("[Unit]\nAfter=a.service\n[Service]\nType=simple\nEnvironmentFile=-/etc/default/x\nExecStart=/bin/x --old\n"), 0o644)
	os.WriteFile(drop, []byte("[Unit]\nAfter=b.service c.service\n[Service]\nType=notify\nEnvironmentFile=/run/y.env\nExecStart=\nExecStart=/bin/x --new\n"), 0o644)
	u, err := Load(main, drop)
	if err != nil {
		t.Fatal(err)
	}
	if got := u.List("Service", "ExecStart"); !reflect.DeepEqual(got, []string{"/bin/x --new"}) {
		t.Errorf("ExecStart = %q", got)
	}
	if got, _ := u.Value("Service", "Type"); got != "notify" {
		t.Errorf("Type = %q", got)
	}
	if got := u.Words("Unit", "After"); !reflect.DeepEqual(got, []string{"a.service", "b.service", "c.service"}) {
		t.Errorf("After = %q", got)
	}
	want := []EnvFile{{"/etc/default/x", true}, {"/run/y.env", false}}
	if got := u.EnvironmentFiles(); !reflect.DeepEqual(got, want) {
		t.Errorf("EnvironmentFiles = %+v", got)
	}
}

// FuzzParseEnvironmentFile checks that the parser never panics and that
// every value it returns survives being written back double-quoted.
func FuzzParseEnvironmentFile(f *testing.F) {
	for _, s := range []string{"A=1\n", "A=\"x\\\"y\"\n", "A='a b'\n# c\n", "A=x\\\ny", "A=  b  ", "; x\nB=\"\n\""} {
		f.Add([]byte(s))
	}
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "`", "\\`", "$", `\$`)
	f.Fuzz(func(t *testing.T, b []byte) {
		vars, err := ParseEnvironmentFile(b)
		if err != nil {
			return
		}
		var out strings.Builder
		for _, v := range vars {
			if !validName(v.Key) {
				t.Fatalf("invalid key %q accepted", v.Key)
			}
			out.WriteString(v.Key + "=\"" + esc.Replace(v.Value) + "\"\n")
		}
		again, err := ParseEnvironmentFile([]byte(out.String()))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out.String(), err)
		}
		if !reflect.DeepEqual(vars, again) && !(len(vars) == 0 && len(again) == 0) {
			t.Fatalf("round trip changed %q into %q", vars, again)
		}
	})
}

// FuzzExpandCommand checks that expansion never panics and that what it
// returns can be written back: each word of Argv, quoted in each of the three
// ways systemd reads ("…", '…' and bare with escapes, a literal $ as $$),
// expands again to the same Argv and IgnoreFailure. It also checks that a
// line without '$' means the same whatever the environment holds, that
// ${A} is A's value as it is, and that the words $A splits into, quoted back
// into a value, split into the same words.
func FuzzExpandCommand(f *testing.F) {
	for _, s := range []string{"/bin/x $A ${B}", `-/bin/x "a b" 'c'`, "/bin/x $$ ${", `\ `, `/bin/x "a\"b" 'c\'d' \x41\s`, `:/bin/x $A`} {
		f.Add(s, "v w")
	}
	f.Add("/bin/x $A", `a "b c" 'd\'e' \"`)
	f.Fuzz(func(t *testing.T, line, val string) {
		env := map[string]string{"A": val, "B": val}
		c1, err1 := ExpandCommand(line, env)
		if !strings.Contains(line, "$") {
			c2, err2 := ExpandCommand(line, nil)
			if (err1 == nil) != (err2 == nil) {
				t.Fatalf("error depends on the environment: %v vs %v", err1, err2)
			}
			if err1 == nil && !reflect.DeepEqual(c1, c2) {
				t.Fatalf("no variables, yet %q vs %q", c1.Argv, c2.Argv)
			}
		}
		if err1 == nil {
			if len(c1.Argv) == 0 {
				t.Fatalf("%q: no error and no words", line)
			}
			// systemd reads a program name that starts with a prefix
			// character as prefixed, quoted or not: such an Argv[0] has
			// no spelling (systemd's is an absolute path or a name).
			if a0 := c1.Argv[0]; a0 != "" && !strings.ContainsAny(a0[:1], "-@:+!") {
				for style, quote := range []func(string) string{quoteDouble, quoteSingle, quoteBare} {
					var b strings.Builder
					if c1.IgnoreFailure {
						b.WriteByte('-')
					}
					for i, w := range c1.Argv {
						if i > 0 {
							b.WriteByte(' ')
						}
						b.WriteString(quote(w))
					}
					c2, err := ExpandCommand(b.String(), env)
					if err != nil || !reflect.DeepEqual(c1, c2) {
						t.Fatalf("%q gave %q ignore=%v; written back in style %d as %q it gives %q ignore=%v, %v",
							line, c1.Argv, c1.IgnoreFailure, style, b.String(), c2.Argv, c2.IgnoreFailure, err)
					}
				}
			}
		}
		if c, err := ExpandCommand("/bin/x ${A}", env); err != nil || !reflect.DeepEqual(c.Argv, []string{"/bin/x", val}) {
			t.Fatalf("${A} with A=%q: %q, %v", val, c.Argv, err)
		}
		c, err := ExpandCommand("/bin/x $A", env)
		if err != nil {
			t.Fatalf("$A with A=%q: %v", val, err)
		}
		words := c.Argv[1:]
		var v strings.Builder
		for _, w := range words {
			if strings.ContainsAny(w, " \t\n\r") && !strings.ContainsAny(val, `"'\`) {
				t.Fatalf("A=%q without quotes or backslashes split into %q", val, words)
			}
			v.WriteString(` "` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(w) + `"`)
		}
		c, err = ExpandCommand("/bin/x $A", map[string]string{"A": v.String()})
		if err != nil || !reflect.DeepEqual(c.Argv[1:], words) {
			t.Fatalf("A=%q split into %q; A=%q splits into %q, %v", val, words, v.String(), c.Argv[1:], err)
		}
	})
}

// quoteDouble, quoteSingle and quoteBare write a word so that ExpandCommand,
// like systemd, reads it back as it is: in "…", in '…', or without quotes,
// whitespace and quotes escaped. A literal $ is $$ in all three.
func quoteDouble(w string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "$", "$$").Replace(w) + `"`
}

func quoteSingle(w string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`, "$", "$$").Replace(w) + "'"
}

func quoteBare(w string) string {
	if w == "" {
		return `""`
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "'", `\'`, "$", "$$",
		" ", `\s`, "\t", `\t`, "\n", `\n`, "\r", `\r`).Replace(w)
}
