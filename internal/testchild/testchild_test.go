package testchild

import (
	"bytes"
	"context"
	"os"
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
