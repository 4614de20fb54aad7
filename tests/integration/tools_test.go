package integration

import (
	"os"
	"os/exec"
	"testing"
)

// requireTool returns the path of a program the test needs, or stops the
// test: a failure when CI is set, a skip otherwise, naming the Debian package
// that provides it.
func requireTool(t testing.TB, name, pkg string, paths ...string) string {
	t.Helper()
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	msg := name + " is not installed: run `make deps-integration` (or apt-get install " + pkg + ")"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
	return ""
}

// requireFile is requireTool for a file that is not a program.
func requireFile(t testing.TB, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		return
	}
	msg := path + " is missing: run `make deps-integration` (or apt-get install " + pkg + ")"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + " (CI is set, so this is a failure, not a skip)")
	}
	t.Skip(msg)
}
