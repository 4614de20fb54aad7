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
	env := map[string]string{"ARGS": "-v=2  --ip-masq", "SUBNET": "10.244.5.1/24", "SPACE": "a b", "EMPTY": ""}
	for _, tc := range []struct {
		line   string
		want   []string
		ignore bool
	}{
		{"/usr/local/bin/agentd $ARGS", []string{"/usr/local/bin/agentd", "-v=2", "--ip-masq"}, false},
		{"/bin/x $EMPTY $UNSET end", []string{"/bin/x", "end"}, false},
		{"/bin/x --bip=${SUBNET} ${SPACE}", []string{"/bin/x", "--bip=10.244.5.1/24", "a b"}, false},
		{"-/bin/x --price=$$5 $SUBNETx ${UNSET}", []string{"/bin/x", "--price=$5", ""}, true},
		{`/bin/x "quoted word" 'single $ARGS' "$SPACE"`, []string{"/bin/x", "quoted word", "single $ARGS", "a", "b"}, false},
		{"@/bin/x argv0", []string{"/bin/x", "argv0"}, false},
		{`/bin/x a\ b --not=$ARGS`, []string{"/bin/x", "a b", "--not=$ARGS"}, false},
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
	for _, bad := range []string{"", "  ", `/bin/x "open`, "-"} {
		if _, err := ExpandCommand(bad, env); err == nil {
			t.Errorf("%q: want an error", bad)
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

// FuzzExpandCommand checks that expansion never panics and that a line
// without '$' expands to the same words, or fails the same way, whatever the
// environment holds. (With variables it may not: "$A" is a command when A is
// set and an empty command line when it is not, for systemd too.)
func FuzzExpandCommand(f *testing.F) {
	for _, s := range []string{"/bin/x $A ${B}", `-/bin/x "a b" 'c'`, "/bin/x $$ ${", `\ `} {
		f.Add(s, "v w")
	}
	f.Fuzz(func(t *testing.T, line, val string) {
		c1, err1 := ExpandCommand(line, map[string]string{"A": val, "B": val})
		c2, err2 := ExpandCommand(line, nil)
		if strings.Contains(line, "$") {
			return
		}
		if (err1 == nil) != (err2 == nil) {
			t.Fatalf("error depends on the environment: %v vs %v", err1, err2)
		}
		if err1 == nil && !reflect.DeepEqual(c1, c2) {
			t.Fatalf("no variables, yet %q vs %q", c1.Argv, c2.Argv)
		}
	})
}
