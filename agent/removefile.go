package agent

import (
	"errors"
	"io/fs"
	"os"
)

// removeFile is os.Remove, except that a file that is not there is
// fs.ErrNotExist also on a read-only filesystem, where unlink(2) fails
// with EROFS before it looks for the file: the state dir turned read-only
// while the agent runs (ext4's errors=remount-ro) must not make each
// write of subnet.env log that a kept file it does not hold cannot be
// removed.
func removeFile(path string) error {
	err := os.Remove(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if _, serr := os.Lstat(path); errors.Is(serr, fs.ErrNotExist) {
		return serr
	}
	return err
}
