package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestCheckPath: a path whose directories only root can change passes, and
// so does one through a sticky directory of root's (/tmp) to entries of
// root's; a directory on the way (symbolic links followed) that another
// user owns or may write to without the sticky bit, or a link of another
// user's in a sticky directory, is refused naming it and how to mend it.
// What the path names itself is left to CheckOwned.
func TestCheckPath(t *testing.T) {
	const nobody = 65534
	root := os.Geteuid() == 0
	base := t.TempDir()
	mk := func(rel string, mode os.FileMode, uid int) {
		t.Helper()
		p := filepath.Join(base, rel)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
	}
	link := func(rel, target string, uid int) {
		t.Helper()
		p := filepath.Join(base, rel)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Lchown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("ok", 0o755, -1)
	mk("ok/sub", 0o700, -1)
	mk("open", 0o777, -1)
	mk("group", 0o775, -1)
	mk("open/sub", 0o755, -1)
	mk("sticky", 0o777|os.ModeSticky, -1)
	mk("sticky/mine", 0o755, -1)
	mk("last", 0o777, -1)
	link("ok/abs", filepath.Join(base, "open/sub"), -1)
	link("ok/rel", "../open/sub", -1)
	link("ok/good", "sub", -1)
	link("loop", "loop", -1)
	if root {
		mk("theirs", 0o755, nobody)
		mk("sticky/theirs", 0o755, nobody)
		link("sticky/link", filepath.Join(base, "ok"), nobody)
		link("ok/theirlink", "sub", nobody)
	}

	for _, tc := range []struct {
		path     string
		bad      string // the directory or link named, "" for none
		problem  string
		needRoot bool
	}{
		{path: "ok/sub/subnet.env"},
		{path: "ok/sub/not/yet"},
		{path: "ok/good/subnet.env"},
		{path: "sticky/mine/state"},
		{path: "sticky/new"},
		{path: "last"},
		{path: "ok/./sub/../sub/x"},
		{path: "open/sub/subnet.env", bad: "open", problem: "is writable by its group or others (mode 0777) and not sticky"},
		{path: "open/new", bad: "open", problem: "is writable by its group or others (mode 0777) and not sticky"},
		{path: "group/x", bad: "group", problem: "is writable by its group or others (mode 0775) and not sticky"},
		{path: "ok/abs/x", bad: "open", problem: "is writable by its group or others (mode 0777) and not sticky"},
		{path: "ok/rel/x", bad: "open", problem: "is writable by its group or others (mode 0777) and not sticky"},
		{path: "ok/abs/../sub/x", bad: "open", problem: "is writable by its group or others (mode 0777) and not sticky"},
		{path: "ok/theirlink/x", needRoot: true},
		{path: "theirs/x", bad: "theirs", problem: "is owned by uid 65534", needRoot: true},
		{path: "sticky/theirs/x", bad: "sticky/theirs", problem: "is owned by uid 65534", needRoot: true},
		{path: "sticky/link/x", bad: "sticky/link", problem: "is a symbolic link of uid 65534's in " + filepath.Join(base, "sticky") + ", which others may write to, so someone", needRoot: true},
	} {
		if tc.needRoot && !root {
			if os.Getenv("CI") != "" {
				t.Errorf("%s: needs root to give a file to another user; CI is set, so this is a failure", tc.path)
			}
			continue
		}
		path := base + "/" + tc.path // not Join, which would take "abs/.." away
		err := CheckPath(path)
		if tc.bad == "" {
			if err != nil {
				t.Errorf("CheckPath(%s): %v, want nil", tc.path, err)
			}
			continue
		}
		bad := filepath.Join(base, tc.bad)
		var pe *fs.PathError
		if !errors.Is(err, ErrUntrusted) || errors.As(err, &pe) ||
			!strings.HasPrefix(err.Error(), bad+" "+tc.problem) || !strings.Contains(err.Error(), "may have replaced "+path+": ") {
			t.Errorf("CheckPath(%s): %v, want ErrUntrusted, no *fs.PathError, saying %q and what it may have replaced", tc.path, err, bad+" "+tc.problem)
			continue
		}
		if !strings.HasSuffix(tc.bad, "link") && !strings.HasSuffix(err.Error(), "(chown root: "+bad+"; chmod go-w "+bad+")") {
			t.Errorf("CheckPath(%s): %v, want how to mend %s", tc.path, err, bad)
		}
	}

	var pe *fs.PathError
	if err := CheckPath(filepath.Join(base, "loop/x")); !errors.Is(err, syscall.ELOOP) || !errors.As(err, &pe) || errors.Is(err, ErrUntrusted) {
		t.Errorf("CheckPath through a link to itself: %v, want ELOOP", err)
	}
}
