package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// TestLegacyNotRegular: a container's per-container name in dataDir that is
// not a regular file is no saved configuration, for DEL as for the rest
// of the plugin (chainInUse, renamedLegacy, GC: Lstat, regular files only).
// Neither flannel's plugin nor agentd-cni makes one. Before, DEL alone
// followed it (os.Stat): c1's symlink to flannel's file elsewhere gave
// the delegate that file, while chainInUse did not count it for the
// container's chain, and c2's FIFO hung DEL in its read, waiting for a
// writer. DEL now rebuilds each configuration from subnet.env, as with
// nothing saved, and leaves both names alone.
func TestLegacyNotRegular(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	if err := os.MkdirAll(f.dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(f.dir, "flannels")
	if err := os.WriteFile(elsewhere, []byte(flannelsFile), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(f.dataDir, "c1")); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(f.dataDir, "c2")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"c1", "c2"} {
		done := make(chan error, 1)
		go func() { done <- f.p.Del(f.args(id, "")) }()
		var err error
		select {
		case err = <-done:
		case <-time.After(10 * time.Second):
			// Let the read end: a writer that goes at once.
			if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				w.Close()
			}
			<-done
			t.Fatalf("DEL of %s had not returned after 10s (waiting in a read of its per-container name?)", id)
		}
		if err != nil {
			t.Fatalf("DEL of %s: %v", id, err)
		}
		if got := lastStdin(f); got == flannelsFile {
			t.Errorf("DEL of %s gave the delegate the file its per-container symlink names", id)
		}
		if c := f.exec.calls[len(f.exec.calls)-1]; c.command != "DEL" || c.conf["forceAddress"] != true {
			t.Errorf("DEL of %s ran %s with %v, want DEL with a configuration rebuilt from subnet.env", id, c.command, c.conf)
		}
	}
	if got, want := fileNames(t, f.dataDir), []string{"c1", "c2"}; !slices.Equal(got, want) {
		t.Errorf("after the DELs dataDir holds %q, want %q", got, want)
	}
}
