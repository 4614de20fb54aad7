// Package atomicfile replaces files so that a reader or a crash never sees
// them half-written. It imports nothing outside the standard library: the CNI
// plugin and agentd-docker-opts use it and must stay small.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Write replaces path with data so that readers see either the old
// or the new content, never a half-written file, and the new content survives
// a crash once it returns: a temporary file in the same directory is written,
// synced and renamed over path, and the directory is synced.
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
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
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
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
