package main

import (
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPIgnored sends this test process SIGHUP while signals' handlers
// are in place, before and after a SIGTERM has started the shutdown: the
// process lives on and each SIGHUP is logged, and the SIGTERM ends the
// context. Without the handler, SIGHUP's default action ends the test
// binary ("signal: hangup").
func TestSIGHUPIgnored(t *testing.T) {
	logged := make(chan struct{}, 3)
	ctx, release := signals(func() { logged <- struct{}{} })
	defer release()
	hangUp := func(when string) {
		t.Helper()
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-logged:
		case <-time.After(10 * time.Second):
			t.Fatalf("SIGHUP %s: not logged within 10 s", when)
		}
	}
	hangUp("while running")
	hangUp("again")
	if ctx.Err() != nil {
		t.Fatalf("SIGHUP ended the context: %v", ctx.Err())
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("SIGTERM did not end the context within 10 s")
	}
	hangUp("during the shutdown")
}
