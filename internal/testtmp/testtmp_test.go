package testtmp

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDir: Dir is an empty directory, on tmpfs where /dev/shm is one, and
// is gone once the test that asked for it has ended.
func TestDir(t *testing.T) {
	var dir string
	t.Run("sub", func(t *testing.T) {
		dir = Dir(t)
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 0 {
			t.Fatalf("Dir = %s holding %v, %v; want an empty directory", dir, entries, err)
		}
		var shm, st unix.Statfs_t
		if unix.Statfs("/dev/shm", &shm) == nil && shm.Type == unix.TMPFS_MAGIC {
			if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.TMPFS_MAGIC {
				t.Errorf("Dir = %s, of file system type %#x (%v), with /dev/shm tmpfs; want it on tmpfs", dir, st.Type, err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Dir %s after its test ended: %v; want it removed", dir, err)
	}
}
