package cniplugin

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestXtablesLockFileNotRegular: ADD, before a delegate that masquerades
// with legacy iptables, tries the xtables lock at XTABLES_LOCKFILE. Where
// that names a named pipe (a mistaken environment, or another program's
// fifo), opening it to try the lock waited for a writer that never comes,
// and ADD with it, for good. Legacy iptables would wait the same way, so ADD
// now fails at once, naming the file, and runs no delegate.
func TestXtablesLockFileNotRegular(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	bin := t.TempDir()
	// The iptables in PATH is legacy, as legacyIptables asks it.
	if err := os.WriteFile(filepath.Join(bin, "iptables"), []byte("#!/bin/sh\necho 'iptables v1.8.7 (legacy)'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(filepath.ListSeparator)+os.Getenv("PATH"))
	fifo := filepath.Join(t.TempDir(), "xtables.lock")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XTABLES_LOCKFILE", fifo)

	done := make(chan error, 1)
	go func() { done <- f.p.Add(f.args("c1", "")) }()
	const limit = 10 * time.Second
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "the xtables lock "+fifo+" is not a regular file (p") {
			t.Errorf("ADD with XTABLES_LOCKFILE a named pipe: %v, want it refused naming the pipe", err)
		}
	case <-time.After(limit):
		// Let the blocked open return, so the goroutine ends.
		if w, err := os.OpenFile(fifo, os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		<-done
		t.Fatalf("ADD with XTABLES_LOCKFILE a named pipe still waited after %v", limit)
	}
	if len(f.exec.calls) != 0 {
		t.Errorf("delegate calls %+v, want none", f.exec.calls)
	}
	if _, err := os.Stat(f.saved("c1")); err == nil {
		t.Error("the refused ADD saved c1's configuration")
	}
}
