package subnet

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLoadOrCreateHostIDIsStable(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateHostID(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateHostID(dir)
	if err != nil || a != b {
		t.Fatalf("second load gave %q, %v; want %q", b, err, a)
	}
	other, err := LoadOrCreateHostID(t.TempDir())
	if err != nil || other == a {
		t.Fatalf("another state dir gave %q, %v; want a different id", other, err)
	}
	if err := os.WriteFile(filepath.Join(dir, HostIDFile), []byte("not hex\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateHostID(dir); err == nil {
		t.Fatal("a corrupt host-id file was accepted")
	}
}

func FuzzParseHostID(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef\n"))
	f.Add([]byte("0123456789ABCDEF0123456789abcdef"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseHostID(b)
		if err != nil {
			return
		}
		// An accepted id is canonical: it reads back identically from
		// what LoadOrCreateHostID writes.
		again, err := ParseHostID([]byte(id + "\n"))
		if err != nil || again != id || len(id) != 32 {
			t.Fatalf("accepted %q but its written form gives %q, %v", id, again, err)
		}
	})
}
