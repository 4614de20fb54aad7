// Package fsfault lets tests make file writes fail as on a full disk,
// without a mount: a file size limit (RLIMIT_FSIZE) of a few bytes makes
// every write past it fail with EFBIG (Go ignores SIGXFSZ).
package fsfault

import (
	"syscall"
	"testing"
)

// Full runs f with the process's file size limit at 8 bytes, and puts the
// limit back before it returns.
func Full(t testing.TB, f func()) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	small := lim
	small.Cur = 8
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &small); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			t.Fatal(err)
		}
	}()
	f()
}
