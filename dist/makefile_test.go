package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeRecipesUseMakesGo: README's two commands need Go "in PATH or at
// /usr/local/go", and the Makefile's own message offers make GO=/path/to/go.
// The Go make picks that way must also be the one its recipes and their
// scripts reach: lint's gofmt, and tests/kube/build-kube.sh and
// tests/flanneld/build-flanneld.sh, which run ${GO:-go}. A recipe added with
// --eval stands in for them: it runs the same look-ups with a PATH that holds
// no Go, and must find the Go make picked.
func TestMakeRecipesUseMakesGo(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		const msg = "make is not installed (apt-get install make)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure, not a skip")
		}
		t.Skip(msg)
	}
	root, _ := repoREADME(t)
	goroot := testGOROOT(t)
	goCmd := filepath.Join(goroot, "bin", "go")
	if _, err := os.Stat(goCmd); err != nil {
		t.Fatalf("cannot find the go command of the Go running this test: %v", err)
	}
	// PATH without any directory that holds a go or gofmt command.
	var dirs []string
	for _, d := range filepath.SplitList(os.Getenv("PATH")) {
		_, errGo := os.Stat(filepath.Join(d, "go"))
		_, errFmt := os.Stat(filepath.Join(d, "gofmt"))
		if d != "" && errGo != nil && errFmt != nil {
			dirs = append(dirs, d)
		}
	}
	path := strings.Join(dirs, string(filepath.ListSeparator))
	const probe = `agentd-probe: ; @command -v gofmt && $${GO:-go} env GOROOT`

	cases := []struct {
		name string
		args []string
		want string // GOROOT of the Go the recipe must reach
	}{
		{"GO on the command line", []string{"GO=" + goCmd}, goroot},
		// The Makefile's fallback when PATH holds no go.
		{"Go at /usr/local/go", nil, "/usr/local/go"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.args == nil {
				if _, err := os.Stat("/usr/local/go/bin/go"); err != nil {
					msg := "no Go at /usr/local/go, the Makefile's fallback: " + err.Error()
					if os.Getenv("CI") != "" {
						t.Fatal(msg + " (CI is set, and .ci/run puts Go there, so this is a failure, not a skip)")
					}
					t.Skip(msg)
				}
			}
			args := append([]string{"--no-print-directory", "-C", root, "--eval", probe, "agentd-probe"}, c.args...)
			cmd := exec.Command("make", args...)
			cmd.Env = append(withoutEnv(os.Environ(), "PATH", "GO", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"), "PATH="+path)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("make %s with PATH=%s: %v\n%s", strings.Join(c.args, " "), path, err, out)
			}
			gofmt, goroot, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
			if want, _ := filepath.EvalSymlinks(c.want); goroot != c.want && goroot != want {
				t.Errorf("the recipe's ${GO:-go} is the Go in %s; make picked the one in %s", goroot, c.want)
			}
			if gofmt != filepath.Join(goroot, "bin", "gofmt") {
				t.Errorf("the recipe's gofmt is %s, not that of the Go in %s", gofmt, goroot)
			}
		})
	}
}

// testGOROOT is the GOROOT of the Go running this test, asked of the go
// command that go test puts first in the test's PATH. runtime.GOROOT is
// empty in a test built with -trimpath (GOFLAGS=-trimpath), and deprecated.
func testGOROOT(t *testing.T) string {
	t.Helper()
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go command in PATH, where go test puts its own: %v", err)
	}
	out, err := exec.Command(goCmd, "env", "GOROOT").Output()
	goroot := strings.TrimSpace(string(out))
	if err != nil || goroot == "" {
		t.Fatalf("%s env GOROOT: %q, %v", goCmd, goroot, err)
	}
	return goroot
}

// withoutEnv is env without the variables named.
func withoutEnv(env []string, names ...string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if name == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}
