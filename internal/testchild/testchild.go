// Package testchild runs a test of the calling test binary again, as a
// child process: for a test that needs what a Go process cannot give one
// test of its own (a network or mount namespace for all its threads, a
// limit on open files, a first read of the environment), or that must be
// seen to fail. The parent sets an environment variable by which the child
// knows it is the child. Only tests import it.
package testchild

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Context is ctx, ended 10 s before go test's -timeout would end the
// process running t: a child killed by then still has its output logged.
func Context(t *testing.T, ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := t.Deadline(); ok {
		return context.WithDeadline(ctx, d.Add(-10*time.Second))
	}
	return context.WithCancel(ctx)
}

// Run runs the test named test of this test binary again, alone and
// verbose (see Args), with env (NAME=value) added to this process's
// environment and attr as its SysProcAttr (nil: none), and returns its
// output and error output together and its error.
//
// The child is killed when ctx ends, or 10 s before go test's -timeout
// (see Context) if that comes first; its output is waited for 5 s at most
// after. The calling goroutine keeps its thread until the child is reaped:
// a parent-death signal (attr's Pdeathsig) follows the thread that forked
// the child, not the process.
func Run(ctx context.Context, t *testing.T, test string, attr *syscall.SysProcAttr, env ...string) ([]byte, error) {
	ctx, cancel := Context(t, ctx)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], Args(test)...)
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = attr
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return cmd.CombinedOutput()
}

// ExitAtOnce adds atexit_sleep_ms=0 to GORACE in this process's
// environment, keeping what was set, and returns GORACE's new value. A
// process built with -race sleeps a second before it exits (1000 ms by
// default), for other threads to report races; children that inherit this
// environment (or are given the value) still report races as they run, but
// exit at once, which matters to tests that wait for many such exits.
func ExitAtOnce() (string, error) {
	v := strings.TrimSpace(os.Getenv("GORACE") + " atexit_sleep_ms=0")
	return v, os.Setenv("GORACE", v)
}

// Args are the flags that make a test binary run the test named test
// alone, verbose and once: test is a name as t.Name() gives it, a
// subtest's too, and each of its parts must match its level whole (the
// parent of a subtest runs, but none of its other subtests).
func Args(test string) []string {
	parts := strings.Split(test, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return []string{"-test.run=" + strings.Join(parts, "/"), "-test.v", "-test.count=1"}
}

// Passed is nil if out, the output of a child Run ran, says test passed,
// and no test or subtest skipped. A child that ran no test (a name that
// matches none) or skipped exits 0 as well.
func Passed(out []byte, test string) error {
	if !strings.Contains(string(out), "--- PASS: "+test+" ") {
		return errors.New("the child did not run the test, or it did not pass")
	}
	if strings.Contains(string(out), "--- SKIP") {
		return errors.New("the child skipped the test, in whole or in part")
	}
	return nil
}

// StartReady starts cmd, a child that writes the line "ready" to its
// standard output once set up and runs until its standard input closes
// (a squatter on a socket name, say), and waits for that line. start
// starts cmd (nil: cmd.Start), so that a caller may fork it from a thread
// in another namespace; the child's error output is this process's.
//
// stop closes the child's standard input and returns what cmd.Wait
// returns; later calls return the same. StartReady returns errors rather
// than failing a test, so that a goroutine other than the test's may call
// it; when the child does not say ready it has been stopped.
func StartReady(cmd *exec.Cmd, start func() error) (stop func() error, err error) {
	if start == nil {
		start = cmd.Start
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := start(); err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	var once sync.Once
	var waitErr error
	stop = func() error {
		once.Do(func() {
			in.Close()
			waitErr = cmd.Wait()
		})
		return waitErr
	}
	if line, err := bufio.NewReader(out).ReadString('\n'); line != "ready\n" {
		stop()
		return nil, fmt.Errorf("did not start: %q, %v", line, err)
	}
	return stop, nil
}
