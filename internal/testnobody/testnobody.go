// Package testnobody lets root's tests act as another local user without
// privileges, nobody (uid 65534): to show what such a user could do to
// files and directories root trusts. Only tests import it.
package testnobody

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// UID is nobody's user id, and its group id.
const UID = 65534

// Require skips the test unless it runs as root, who alone may run a
// command as another user; when CI is set it fails instead, so a root test
// is never skipped there unseen.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const msg = "needs root to run a command as nobody (run the tests as root)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
	}
	t.Skip(msg)
}

// Dir makes a directory for the test under os.TempDir, named from prefix,
// that nobody may reach into (mode 0755), and removes it when the test
// ends. t.TempDir's directories are 0700: nobody could not reach into them.
func Dir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// Run runs script with /bin/sh as nobody, with env (NAME=value) added to
// the test's environment, and returns its output and error output together.
func Run(t testing.TB, script string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: UID, Gid: UID}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}
