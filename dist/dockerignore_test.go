// Package dist holds no code: it is what operators install (README,
// "Installing"). Its tests check the image's build context, the root
// .dockerignore, against dist/Dockerfile, and that the tests and metrics
// README names exist.
package dist

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestDockerignoreKeepsWhatTheBuildNeeds: the root .dockerignore leaves out
// the large directories (make build's bin/, git's history), and nothing that
// dist/Dockerfile copies from the context or that its go build compiles:
// go.mod, go.sum and the directory of every package of this module that the
// built commands depend on.
//
// The file is held to plain paths (no wildcards, no "!" exceptions), for
// which docker's rule is simple: a path is left out when a pattern names it
// or one of its parent directories. That rule is all this test applies.
func TestDockerignoreKeepsWhatTheBuildNeeds(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	ignore, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var excluded []string
	sc := bufio.NewScanner(bytes.NewReader(ignore))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		p := filepath.Clean(strings.TrimPrefix(line, "/"))
		if strings.ContainsAny(line, `*?[]\!`) || p == "." || strings.HasPrefix(p, "..") {
			t.Fatalf(".dockerignore: %q is not a plain path inside the context; this test judges only those", line)
		}
		excluded = append(excluded, p)
	}
	for _, big := range []string{"bin", ".git"} {
		if !slices.Contains(excluded, big) {
			t.Errorf(".dockerignore does not leave out %s", big)
		}
	}
	isExcluded := func(rel string) (string, bool) {
		for _, p := range excluded {
			if rel == p || strings.HasPrefix(rel, p+"/") {
				return p, true
			}
		}
		return "", false
	}

	dockerfile, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	// The build stage's COPY sources (the final stage copies --from it).
	var needed []string
	copyLine := regexp.MustCompile(`(?m)^COPY\s+([^-\n].*)$`)
	for _, m := range copyLine.FindAllStringSubmatch(string(dockerfile), -1) {
		f := strings.Fields(m[1])
		for _, src := range f[:len(f)-1] {
			if src != "." {
				needed = append(needed, filepath.Clean(src))
			}
		}
	}
	if !slices.Contains(needed, "go.mod") || !slices.Contains(needed, "go.sum") {
		t.Fatalf("dist/Dockerfile copies %q; want go.mod and go.sum among them (has it changed?)", needed)
	}
	// What its go build compiles, and from where.
	build := regexp.MustCompile(`go build [^\n]*?((?:\s+\./run/[^\s\\]+)+)`).FindStringSubmatch(strings.ReplaceAll(string(dockerfile), "\\\n", " "))
	if build == nil {
		t.Fatal("dist/Dockerfile has no go build of ./run/... commands (has it changed?)")
	}
	cmds := strings.Fields(build[1])
	list := exec.Command("go", append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.Dir}}{{end}}"}, cmds...)...)
	list.Dir = root
	list.Env = append(os.Environ(), "GOOS=linux", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	list.Stderr = &stderr
	out, err := list.Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v\n%s", strings.Join(cmds, " "), err, stderr.Bytes())
	}
	pkgs := 0
	for _, dir := range strings.Fields(string(out)) {
		rel, err := filepath.Rel(root, dir)
		if err != nil || strings.HasPrefix(rel, "..") {
			continue // a module's, from the module cache
		}
		needed = append(needed, rel)
		pkgs++
	}
	if pkgs < len(cmds) {
		t.Fatalf("go list found %d packages of this module for %q", pkgs, cmds)
	}
	for _, n := range needed {
		if p, ok := isExcluded(filepath.ToSlash(n)); ok {
			t.Errorf("the build needs %s, which .dockerignore leaves out (%q)", n, p)
		}
	}
	t.Logf("left out %q; the build needs %q", excluded, needed)
}
