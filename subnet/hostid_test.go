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
