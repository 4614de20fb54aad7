package cniplugin

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// fakeLegacyIptables puts an iptables first in PATH that says it is legacy
// iptables, as legacyIptables asks it.
func fakeLegacyIptables(t *testing.T) {
	t.Helper()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "iptables"), []byte("#!/bin/sh\necho 'iptables v1.8.7 (legacy)'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(filepath.ListSeparator)+os.Getenv("PATH"))
}

// TestDelGoneNetnsSkipsXtablesWait: DEL given a pod namespace that is no
// longer there (containerd tearing down the sandboxes of before a reboot,
// whose /run/netns entries went with it) does not wait for the xtables
// lock: bridge, not finding the pod's interface, runs no iptables, and
// agentd-cni removes the masquerade chain itself, each iptables call
// waiting at most 1 s. Before, while kube-proxy held the lock (its full
// sync after the reboot), each such DEL waited 5 s and failed with code
// 11, to be retried, for a lock nothing in it needed.
func TestDelGoneNetnsSkipsXtablesWait(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	fakeLegacyIptables(t)
	lock := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lock)
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatal(err)
	}
	holdLock(t, lock)
	a := f.args("c1", "")
	a.Netns = filepath.Join(f.dir, "gone-netns")
	if err := f.p.Del(a); err != nil {
		t.Fatalf("DEL with the pod's namespace gone and the xtables lock held: %v", err)
	}
	if len(f.exec.calls) != 2 || f.exec.calls[1].command != "DEL" {
		t.Errorf("delegate calls %+v, want ADD then DEL", f.exec.calls)
	}
	if want := []string{"cbr0 c1"}; !slices.Equal(f.masq.removeCalls, want) {
		t.Errorf("chains removed %q, want %q (the namespace is gone)", f.masq.removeCalls, want)
	}
}

// TestXtablesLockFileNotRegular: ADD, before a delegate that masquerades
// with legacy iptables, tries the xtables lock at XTABLES_LOCKFILE. Where
// that names a named pipe (a mistaken environment, or another program's
// fifo), opening it to try the lock waited for a writer that never comes,
// and ADD with it, for good. Legacy iptables would wait the same way, so ADD
// now fails at once, naming the file, and runs no delegate.
func TestXtablesLockFileNotRegular(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envBridgeMasq)
	fakeLegacyIptables(t)
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
