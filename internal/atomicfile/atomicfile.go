// Package atomicfile replaces files so that a reader or a crash never sees
// them half-written. It imports nothing outside the standard library: the CNI
// plugin and agentd-docker-opts use it and must stay small.
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Write replaces path with data so that readers see either the old
// or the new content, never a half-written file, and the new content survives
// a crash once it returns: a temporary file in the same directory is written,
// synced and renamed over path, and the directory is synced.
//
// A temporary file left by a writer that died before its rename (killed
// between its create and its rename) is removed by the next successful
// Write of the same path, or by RemoveLeftovers. A writer holds an flock on
// its temporary file until it is done, so one still being written by
// another process is left alone.
//
// On failure (a full or read-only filesystem, a directory in the way, a
// failed sync) the temporary file is removed and what was at path stays;
// only the temporary file's close and the directory's sync come after the
// rename, so when one of those fails the new content is in place but may
// not survive a crash. The error names path once, then the step that failed
// with the operating system's error, which errors.Is matches
// (syscall.ENOSPC, syscall.EROFS…):
//
//	replace /run/flannel/subnet.env: write /run/flannel/.subnet.env.tmp123: no space left on device
func Write(path string, data []byte, perm os.FileMode) error {
	if err := write(path, data, perm); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// write is Write; the errors of the os package it returns already name the
// file each step worked on.
func write(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := createLocked(dir, tmpPrefix(path))
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this finds nothing
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	// Renamed while open, so locked: closed first, the file would look
	// like a leftover to another writer of path until renamed.
	if err := os.Rename(tmp, path); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	RemoveLeftovers(path)
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// tmpPrefix is the base name of path's temporary files but for the random
// digits os.CreateTemp puts at its end.
func tmpPrefix(path string) string {
	return "." + filepath.Base(path) + ".tmp"
}

// createLocked creates a temporary file in dir whose name is prefix and
// digits, and takes an flock on it that marks it as being written, for
// RemoveLeftovers. Another writer's RemoveLeftovers may take the new file
// for a leftover before it is locked: the lock, taken once that one lets
// go, then finds the file unlinked, and another is made. Where the
// filesystem has no locks the file is never taken for a leftover.
func createLocked(dir, prefix string) (*os.File, error) {
	for {
		f, err := os.CreateTemp(dir, prefix+"*")
		if err != nil {
			return nil, err
		}
		var st syscall.Stat_t
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX) != nil || syscall.Fstat(int(f.Fd()), &st) != nil || st.Nlink > 0 {
			return f, nil
		}
		f.Close()
	}
}

// RemoveLeftovers removes path's temporary files whose writer is gone: those
// on which no flock is held. Write calls it once it has replaced path; one
// that removes path for good calls it too, as no later Write of path will.
// It does its best: what it cannot open, lock or remove stays.
func RemoveLeftovers(path string) {
	prefix := tmpPrefix(path)
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return
	}
	for _, e := range entries {
		digits, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(filepath.Dir(path), e.Name())
		f, err := os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
		if err != nil {
			continue
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
			os.Remove(name)
		}
		f.Close()
	}
}

// ErrUntrusted is wrapped by the errors of CheckOwned and ReadOwned for a
// file that someone other than root or this process's user may have written.
var ErrUntrusted = errors.New("someone other than root may have written it")

// maxOwnedSize bounds what ReadOwned reads: the files it is for (subnet.env)
// hold a few hundred bytes.
const maxOwnedSize = 1 << 20

// ReadOwned reads path as os.ReadFile does, but only if no one but root or
// this process's user can have written it (see CheckOwned): a reader running
// as root must not act on a file that another user put in the place of one
// root writes, in a directory that user can write to (a /run/flannel made
// 0777 by someone, a --subnet-file in /tmp). A symbolic link is followed, and
// the file it leads to is checked. The file is opened without blocking, so
// a named pipe in its place is refused rather than waited on.
//
// An error opening or reading the file is the os package's *fs.PathError;
// one from the check wraps ErrUntrusted and is no *fs.PathError, so callers
// can tell "cannot read" from "will not read".
//
// A file unlinked while it was opened (root's writer renamed another over
// path, as Write does) has no link left, which is no one else's doing: the
// file at path is read again.
func ReadOwned(path string) ([]byte, error) { return readOwnedAgain(path, false) }

// ReadOwnedPath is ReadOwned of a file in a place only root can change
// (CheckPath): path is checked before the file is opened and again once it
// is open, and the file opened must be the one path then leads to. The
// first check alone left a window: CheckPath's walk stops at an element
// that does not exist, and in a sticky directory (/tmp) another user may
// make it (a directory of theirs, with a link to another of root's files)
// after the check, have the open go through it, and remove it. The second
// check refuses it while it stands (the error says path was replaced while
// it was opened, and wraps ErrUntrusted); once it is gone, path leads
// nowhere (the os package's not-exist error, as for a missing file) or,
// through directories only root can change, to another file: one that
// root's writer renamed over path meanwhile (Write), which is read in turn.
// The file the second check's own lookups reach is the one compared: a
// stat of path after the check could find another directory of theirs
// made in between.
func ReadOwnedPath(path string) ([]byte, error) { return readOwnedAgain(path, true) }

// maxReplaced bounds the reads of a file replaced while each was opened: a
// writer replaces subnet.env rarely.
const maxReplaced = 10

// readOwnedAgain is ReadOwned, and with checkPath ReadOwnedPath: readOwned
// again while the file opened was replaced meanwhile.
func readOwnedAgain(path string, checkPath bool) ([]byte, error) {
	for attempt := 1; ; attempt++ {
		if checkPath {
			if err := CheckPath(path); err != nil {
				return nil, err
			}
		}
		b, same, err := readOwned(path, checkPath)
		if err != nil || same {
			return b, err
		}
		if attempt == maxReplaced {
			return nil, fmt.Errorf("%s was replaced at each of %d reads", path, attempt)
		}
	}
}

// readOwned is one attempt of readOwnedAgain: same is false, and nothing is
// read, when the file opened was unlinked meanwhile or, with checkPath,
// path no longer leads to it.
func readOwned(path string, checkPath bool) (b []byte, same bool, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if fi.IsDir() {
		// As os.ReadFile says it: a directory is not an untrusted file.
		return nil, false, &os.PathError{Op: "read", Path: path, Err: syscall.EISDIR}
	}
	if err := CheckOwned(f, false); err != nil {
		if unlinked(f) {
			// Replaced (Write's rename) or removed since it was
			// opened, not another user's link, as CheckOwned says.
			return nil, false, nil
		}
		return nil, false, err
	}
	if checkPath {
		// What the walk's own lookups found, not a stat of path after it:
		// path may change in between.
		now, err := walk(path)
		switch {
		case errors.Is(err, ErrUntrusted):
			return nil, false, fmt.Errorf("%s was replaced while it was opened: %w", path, err)
		case err != nil:
			return nil, false, err
		case now == nil:
			return nil, false, &os.PathError{Op: "open", Path: path, Err: syscall.ENOENT}
		case !os.SameFile(fi, now):
			return nil, false, nil
		}
	}
	b, err = io.ReadAll(io.LimitReader(f, maxOwnedSize+1))
	if err != nil {
		return nil, true, err
	}
	if len(b) > maxOwnedSize {
		return nil, true, fmt.Errorf("%s is larger than %d bytes", path, maxOwnedSize)
	}
	return b, true, nil
}

// unlinked reports whether f is a regular file with no link left.
func unlinked(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && fi.Mode().IsRegular() && st.Nlink == 0
}

// CheckOwned returns nil if only root or this process's user can have
// written the open file f: it is owned by one of them, neither its group nor
// others may write to it, and it is a regular file with no other hard link
// (a link made by another user to a file of root's is not root's file in
// that place) or, if dir, a directory. Otherwise its error names f and what
// is wrong, and wraps ErrUntrusted.
func CheckOwned(f *os.File, dir bool) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner known: %w", f.Name(), ErrUntrusted)
	}
	var problem string
	switch {
	case dir && !fi.IsDir():
		problem = fmt.Sprintf("is not a directory (%v)", fi.Mode())
	case !dir && !fi.Mode().IsRegular():
		problem = fmt.Sprintf("is not a regular file (%v)", fi.Mode())
	case st.Uid != 0 && int(st.Uid) != os.Geteuid():
		problem = fmt.Sprintf("is owned by uid %d", st.Uid)
	case fi.Mode().Perm()&0o022 != 0:
		problem = fmt.Sprintf("is writable by its group or others (mode %#o)", fi.Mode().Perm())
	case !dir && st.Nlink != 1:
		problem = fmt.Sprintf("has %d hard links", st.Nlink)
	default:
		return nil
	}
	return fmt.Errorf("%s %s: %w", f.Name(), problem, ErrUntrusted)
}
