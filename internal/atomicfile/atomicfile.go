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
// Write of the same path. A writer holds an flock on its temporary file
// until it is done, so one still being written by another process is
// left alone.
//
// On failure (a full or read-only filesystem, a directory in the way, a
// failed sync) the temporary file is removed and what was at path stays;
// only the directory's sync comes after the rename, so when that fails the
// new content is in place but may not survive a crash. The error names path
// once, then the step that failed with the operating system's error, which
// errors.Is matches (syscall.ENOSPC, syscall.EROFS…):
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
	f, err := os.CreateTemp(dir, tmpPrefix(path)+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this finds nothing
	// Marks the file as being written, for removeLeftovers; where the
	// filesystem has no locks the file is only never taken for a leftover.
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
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
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	removeLeftovers(path)
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

// removeLeftovers removes path's temporary files whose writer is gone: those
// on which no flock is held. It does its best: what it cannot open, lock or
// remove stays, and the Write that called it has succeeded anyway.
func removeLeftovers(path string) {
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
