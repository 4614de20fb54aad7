package atomicfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/agentd/agentd/internal/fsfault"
)

// TestWrite: the file is created with its directory, replaced whole, gets the
// mode asked for whatever the umask, and no temporary file is left behind.
func TestWrite(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "dir")
	path := filepath.Join(dir, "f")
	for _, c := range []struct {
		data string
		perm os.FileMode
	}{
		{"first, longer content\n", 0o644},
		{"second\n", 0o600},
	} {
		if err := Write(path, []byte(c.data), c.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != c.data {
			t.Fatalf("read back %q, %v; want %q", b, err, c.data)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != c.perm {
			t.Fatalf("mode %v, %v; want %v", fi.Mode().Perm(), err, c.perm)
		}
		entries, err := os.ReadDir(dir)
		if err != nil || len(entries) != 1 {
			t.Fatalf("directory holds %v, %v; want only f", entries, err)
		}
	}
}

// TestWriteFailureCleansUp: when the new content cannot be renamed into
// place, what was there stays and the temporary file is removed.
func TestWriteFailureCleansUp(t *testing.T) {
	dir := t.TempDir()
	// Renaming a file over a non-empty directory fails.
	path := filepath.Join(dir, "d")
	if err := os.MkdirAll(filepath.Join(path, "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("new\n"), 0o644); err == nil {
		t.Fatal("replacing a non-empty directory succeeded")
	}
	if fi, err := os.Stat(filepath.Join(path, "x")); err != nil || !fi.IsDir() {
		t.Fatalf("what was there is gone: %v", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 1 {
		t.Fatalf("directory holds %v, %v; want d only (no temporary file)", entries, err)
	}
}

// TestWriteErrorNamesFile: a failed Write says which file it could not
// replace and why, once each, and keeps the operating system's error for
// errors.Is; nothing is left half-written and no temporary file stays. A
// file size limit (RLIMIT_FSIZE) makes the write itself fail, as a full
// filesystem does, without a mount.
func TestWriteErrorNamesFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	const old = "FLANNEL_SUBNET=10.244.5.1/24\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	fsfault.Full(t, func() { err = Write(path, []byte("FLANNEL_SUBNET=10.244.6.1/24\n"), 0o644) })
	if !errors.Is(err, syscall.EFBIG) {
		t.Fatalf("Write over the size limit = %v, want EFBIG", err)
	}
	checkError(t, err, path, "file too large")
	if b, err := os.ReadFile(path); err != nil || string(b) != old {
		t.Errorf("after the failure the file holds %q, %v; want the old %q", b, err, old)
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v, %v; want subnet.env only (no temporary file)", entries, err)
	}

	// A step other than the write: the directory cannot be made.
	notDir := filepath.Join(dir, "subnet.env", "x")
	err = Write(notDir, []byte("x\n"), 0o644)
	if !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Write under a file = %v, want ENOTDIR", err)
	}
	checkError(t, err, notDir, "not a directory")
}

// checkError checks that err's text starts by naming path and states cause
// once, with no step repeated.
func checkError(t *testing.T, err error, path, cause string) {
	t.Helper()
	msg := err.Error()
	if want := "replace " + path + ": "; !strings.HasPrefix(msg, want) {
		t.Errorf("error %q does not start with %q", msg, want)
	}
	if n := strings.Count(msg, cause); n != 1 {
		t.Errorf("error %q states %q %d times, want once", msg, cause, n)
	}
	parts := strings.Split(msg, ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] {
			t.Errorf("error %q repeats %q", msg, parts[i])
		}
	}
}

// TestWriteRemovesLeftovers: a temporary file of path left by a writer that
// died before its rename (no flock on it) is removed by the next Write; one
// another writer still holds, and other files, stay.
func TestWriteRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	create := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	dead := create(".subnet.env.tmp123")
	live := create(".subnet.env.tmp456")
	others := []string{
		create(".subnet.env.tmpx1"), create(".other.env.tmp1"),
		create("subnet.env.tmp1"), create(".subnet.env.tmp"),
	}
	lf, err := os.Open(live)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	if err := syscall.Flock(int(lf.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}

	if err := Write(path, []byte("FLANNEL_MTU=1450\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a dead writer's leftover %s: %v; want it removed", dead, err)
	}
	for _, p := range append(others, live) {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v; want it kept", p, err)
		}
	}
}

// TestConcurrentWritesOfOnePath: writers of the same path at the same time
// (two runs of the CNI plugin saving one attachment, agentd-docker-opts run
// twice) all succeed, and the file holds one of their contents whole. A
// writer's removal of leftovers must not take another's temporary file
// while that one is still being written or renamed: it would fail with
// ENOENT at its rename.
func TestConcurrentWritesOfOnePath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	const writers, writes = 8, 200
	errs := make(chan error, writers*writes)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := []byte(strings.Repeat(string(rune('a'+w)), 64))
			for range writes {
				if err := Write(path, data, 0o644); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 3 {
			t.Error(err)
		}
	}
	if n > 0 {
		t.Errorf("%d of %d writes failed", n, writers*writes)
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) != 64 || strings.Count(string(b), string(b[:1])) != 64 {
		t.Errorf("read back %q, %v; want one writer's 64 bytes", b, err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil || len(entries) != 1 {
		t.Errorf("directory holds %v, %v; want only f", entries, err)
	}
}
