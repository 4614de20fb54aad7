// Package atomicfile replaces files so that a reader or a crash never sees
// them half-written. It imports nothing outside the standard library: the CNI
// plugin and agentd-docker-opts use it and must stay small.
package atomicfile

import (
	"fmt"
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
