package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// maxLinks bounds the symbolic links CheckPath follows, as the kernel's
// MAXSYMLINKS does (ELOOP past it).
const maxLinks = 40

// CheckPath returns nil if only root or this process's user can change what
// path leads to: every directory the kernel looks a name up in on the way to
// path's last element, symbolic links followed, is theirs and writable by
// its owner only, or is sticky (as /tmp is: there another user cannot
// rename or remove an entry that is not theirs), and every symbolic link
// met in such a sticky directory is theirs too. It is OpenSSH's StrictModes
// check of the directories above a file, made for root's readers and
// writers of files under a path an operator chose (--state-dir,
// subnet.env): CheckOwned of the file alone is not enough where another
// user may rename a directory above it away and put one of their own, or a
// symbolic link to another of root's, in its place.
//
// What path names itself is not checked (a symbolic link there is, and
// followed): CheckOwned does that, on the file once open. The walk stops at the first element that does not exist yet;
// whoever makes it makes it in a directory found safe. An error looking an
// element up (permission denied) is the os package's *fs.PathError; a
// directory or link that someone else could change wraps ErrUntrusted, is
// no *fs.PathError, and names the directory, why, and how to mend it.
func CheckPath(path string) error {
	_, err := walk(path)
	return err
}

// walk is CheckPath's walk. It also returns what path leads to, as found by
// the walk's own lookups (the last element's lstat, symbolic links
// followed), or nil when an element does not exist: a caller comparing it
// with a file it opened knows that path led to that file through
// directories and links only root can change, which a separate stat of path
// could not say (path could have changed between the walk and the stat).
func walk(path string) (fs.FileInfo, error) {
	// Not filepath.Abs, which cleans the path: "link/.." is where link
	// leads, and its parent, for the kernel, not where the path started.
	abs := path
	if !filepath.IsAbs(path) {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		abs = wd + "/" + path
	}
	todo := split(abs)
	cur, links := "/", 0
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case ".":
			continue
		case "..":
			// cur is a directory reached without symbolic links, so its
			// parent is the one the kernel goes to, and checked already.
			cur = filepath.Dir(cur)
			continue
		}
		// A name is looked up in cur: no one else may change cur.
		if err := checkDir(cur, path); err != nil {
			return nil, err
		}
		next := filepath.Join(cur, name)
		fi, err := os.Lstat(next)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxLinks {
				return nil, &fs.PathError{Op: "lstat", Path: path, Err: syscall.ELOOP}
			}
			if err := checkLink(next, fi, path); err != nil {
				return nil, err
			}
			target, err := os.Readlink(next)
			if err != nil {
				return nil, err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(split(target), todo...)
		case fi.IsDir():
			cur = next
		default:
			// A file: the last element, or one the caller's open
			// fails on (not a directory).
			return fi, nil
		}
	}
	// A directory, reached through directories only root can change:
	// no one else can change what cur, a path without links, leads to.
	fi, err := os.Stat(cur)
	if errors.Is(err, fs.ErrNotExist) {
		// Removed (by root) since it was looked up.
		return nil, nil
	}
	return fi, err
}

func split(path string) []string {
	var out []string
	for _, e := range strings.Split(path, "/") {
		if e != "" {
			out = append(out, e)
		}
	}
	return out
}

// untrustedPathError is CheckPath's error for a directory or link someone
// other than root or this process's user could change.
type untrustedPathError struct {
	elem, problem, path, mend string
}

func (e *untrustedPathError) Error() string {
	return fmt.Sprintf("%s %s, so someone other than root may have replaced %s: %s", e.elem, e.problem, e.path, e.mend)
}

func (e *untrustedPathError) Unwrap() error { return ErrUntrusted }

// trusted reports whether uid is root or this process's user.
func trusted(uid uint32) bool { return uid == 0 || int(uid) == os.Geteuid() }

func checkDir(dir, path string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return &untrustedPathError{dir, "has no owner known", path, "give another path"}
	}
	mend := fmt.Sprintf("make %s root's and writable by root only (chown root: %s; chmod go-w %s)", dir, dir, dir)
	switch perm := fi.Mode().Perm(); {
	case !trusted(st.Uid):
		return &untrustedPathError{dir, fmt.Sprintf("is owned by uid %d", st.Uid), path, mend}
	case perm&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0:
		return &untrustedPathError{dir, fmt.Sprintf("is writable by its group or others (mode %#o) and not sticky", perm), path, mend}
	}
	return nil
}

// checkLink refuses a symbolic link of another user's in a directory that
// others may write to (and so sticky: checkDir passed it): they may point
// it elsewhere at any time. Elsewhere a link's owner cannot change it.
func checkLink(link string, fi fs.FileInfo, path string) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || trusted(st.Uid) {
		return nil
	}
	dir := filepath.Dir(link)
	di, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if di.Mode().Perm()&0o022 == 0 {
		return nil
	}
	return &untrustedPathError{link, fmt.Sprintf("is a symbolic link of uid %d's in %s, which others may write to", st.Uid, dir), path,
		"remove it and give the path it leads to"}
}
