package main

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// TestSIGHUPIgnored sends this test process SIGHUP while ignoreHangups
// catches it: the process lives on and each signal is logged. Without the
// handler the default action ends the test binary ("signal: hangup").
func TestSIGHUPIgnored(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logged := make(chan struct{}, 2)
	ignoreHangups(ctx, func() { logged <- struct{}{} })
	for i := 1; i <= 2; i++ {
		if err := syscall.Kill(syscall.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-logged:
		case <-time.After(10 * time.Second):
			t.Fatalf("SIGHUP %d: not logged within 10 s", i)
		}
	}
}
