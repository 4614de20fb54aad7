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

// TestReadOwned: what Write leaves is read back; a file someone other than
// root may have written is refused with an error wrapping ErrUntrusted and
// no *fs.PathError, a missing file or a directory with the *fs.PathError
// os.ReadFile gives, and a file too large for what ReadOwned is for (and so
// not subnet.env) with neither.
func TestReadOwned(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := Write(path, []byte("FLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadOwned(path); err != nil || string(b) != "FLANNEL_MTU=1450\n" {
		t.Fatalf("ReadOwned of Write's file: %q, %v", b, err)
	}

	if err := os.Chmod(path, 0o646); err != nil {
		t.Fatal(err)
	}
	_, err := ReadOwned(path)
	var pe *fs.PathError
	if !errors.Is(err, ErrUntrusted) || errors.As(err, &pe) || !strings.Contains(err.Error(), path+" is writable by its group or others (mode 0646)") {
		t.Errorf("ReadOwned of a file others can write: %v, want ErrUntrusted, no *fs.PathError, naming the file and its mode", err)
	}

	if _, err := ReadOwned(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) {
		t.Errorf("ReadOwned of a missing file: %v, want an *fs.PathError for fs.ErrNotExist", err)
	}
	if _, err := ReadOwned(dir); !errors.Is(err, syscall.EISDIR) || !errors.As(err, &pe) || errors.Is(err, ErrUntrusted) {
		t.Errorf("ReadOwned of a directory: %v, want os.ReadFile's *fs.PathError for EISDIR", err)
	}

	big := filepath.Join(dir, "big")
	if err := Write(big, make([]byte, maxOwnedSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadOwned(big); err == nil || errors.Is(err, ErrUntrusted) || errors.As(err, &pe) {
		t.Errorf("ReadOwned of %d bytes: %v, want an error that it is too large", maxOwnedSize+1, err)
	}
}

// TestCheckOwnedDir: a directory of root's that only root can write passes,
// whatever its other bits; one others can write, or a file where a
// directory is wanted, does not.
func TestCheckOwnedDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	for _, tc := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o755, true}, {0o700, true}, {0o1755, true}, {0o757, false}, {0o1777, false}} {
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// Chmod takes os.ModeSticky, not the 01000 bit.
		perm := tc.mode.Perm()
		if tc.mode&0o1000 != 0 {
			perm |= os.ModeSticky
		}
		if err := os.Chmod(dir, perm); err != nil {
			t.Fatal(err)
		}
		d, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		err = CheckOwned(d, true)
		d.Close()
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrUntrusted)) {
			t.Errorf("directory of mode %#o: %v, want ok %v", tc.mode, err, tc.ok)
		}
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := CheckOwned(f, true); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("a file where a directory is wanted: %v", err)
	}
}
