package testchild

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// childEnv, set, makes TestRun the child.
const childEnv = "AGENTD_TESTCHILD_CHILD"

// TestRun: the child runs the test named, alone, with the variable given
// in its environment, and its output comes back; Passed says it passed.
func TestRun(t *testing.T) {
	if v := os.Getenv(childEnv); v != "" {
		t.Logf("the child, given %s", v)
		return
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := Run(ctx, t, "TestRun", nil, childEnv+"=x1")
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if err := Passed(out, "TestRun"); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("the child, given x1")) || bytes.Contains(out, []byte("TestPassed")) {
		t.Fatalf("the child's output:\n%s\nwant TestRun alone, given %s=x1", out, childEnv)
	}
}

// TestPassed: only a child's output in which the test passed, and nothing
// skipped, is a pass.
func TestPassed(t *testing.T) {
	for _, c := range []struct {
		out  string
		pass bool
	}{
		{"=== RUN   TestA\n--- PASS: TestA (0.00s)\nPASS\n", true},
		{"=== RUN   TestA\n--- FAIL: TestA (0.00s)\nFAIL\n", false},
		{"testing: warning: no tests to run\nPASS\n", false},
		{"=== RUN   TestAB\n--- PASS: TestAB (0.00s)\nPASS\n", false},
		{"=== RUN   TestA\n--- SKIP: TestA (0.00s)\nPASS\n", false},
		{"=== RUN   TestA\n=== RUN   TestA/b\n--- PASS: TestA (0.00s)\n    --- SKIP: TestA/b (0.00s)\nPASS\n", false},
	} {
		if err := Passed([]byte(c.out), "TestA"); (err == nil) != c.pass {
			t.Errorf("Passed(%q) = %v, want a pass: %v", c.out, err, c.pass)
		}
	}
}

// TestRunSubtest: Run given a subtest's t.Name() runs that subtest alone in
// the child, whatever its name holds that a pattern would read otherwise.
func TestRunSubtest(t *testing.T) {
	names := []string{"b", "a+b", "(c)"}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if os.Getenv(childEnv) != "" {
				t.Logf("the child's subtest %s", name)
				return
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			out, err := Run(ctx, t, t.Name(), nil, childEnv+"=x1")
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			if err := Passed(out, t.Name()); err != nil {
				t.Fatalf("%v:\n%s", err, out)
			}
			for _, other := range names {
				ran := bytes.Contains(out, []byte("the child's subtest "+other+"\n"))
				if ran != (other == name) {
					t.Errorf("the child's output:\n%s\nwant subtest %s alone", out, name)
				}
			}
		})
	}
}

// readyEnv, set, makes TestStartReady the child: with "ready" it says so
// and runs until its stdin closes, then exits 3; with anything else it
// says that and exits.
const readyEnv = "AGENTD_TESTCHILD_READY"

// TestStartReady: StartReady returns once the child said ready, the child
// still running; stop ends it and returns how it ended, again when called
// again. A child that says something else, or cannot start, is an error,
// and the child is not left running.
func TestStartReady(t *testing.T) {
	if v := os.Getenv(readyEnv); v != "" {
		fmt.Println(v)
		if v == "ready" {
			_, _ = io.Copy(io.Discard, os.Stdin)
			os.Exit(3)
		}
		os.Exit(0)
	}
	child := func(v string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStartReady$")
		cmd.Env = append(os.Environ(), readyEnv+"="+v)
		return cmd
	}

	cmd := child("ready")
	stop, err := StartReady(cmd, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.ProcessState != nil {
		t.Errorf("the child ended before stop: %v", cmd.ProcessState)
	}
	var exit *exec.ExitError
	if err := stop(); !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Errorf("stop: %v, want the child's exit 3 once its stdin closed", err)
	}
	if err2 := stop(); !errors.As(err2, &exit) || exit.ExitCode() != 3 {
		t.Errorf("stop again: %v, want the same exit 3", err2)
	}

	cmd = child("not yet")
	if _, err := StartReady(cmd, nil); err == nil || !strings.Contains(err.Error(), `did not start: "not yet\n"`) {
		t.Errorf("a child that said %q: %v, want an error naming what it said", "not yet", err)
	}
	if cmd.ProcessState == nil {
		t.Error("a child that did not say ready was left running")
	}

	refused := errors.New("refused")
	if _, err := StartReady(child("ready"), func() error { return refused }); !errors.Is(err, refused) {
		t.Errorf("start failing: %v, want its error", err)
	}
}
