package agent

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/delay"
	"github.com/go-logr/logr/funcr"
)

// TestHealthBindLogsChangeOnce: once the cause of the failed binds
// changed, and its line was logged, the binds that fail for that new cause
// are at -v=2: an IP that stays off the host for days after another
// program had held the port logs one line, not one a bind.
func TestHealthBindLogsChangeOnce(t *testing.T) {
	inUse := fmt.Errorf("health server: listen tcp 198.18.1.2:8471: bind: %w", syscall.EADDRINUSE)
	notHere := fmt.Errorf("health server: listen tcp 198.18.1.2:8471: bind: %w", syscall.EADDRNOTAVAIL)
	results := []error{notHere, notHere, notHere, notHere, nil}
	var logs logLines
	calls := 0
	b := newHealthBind("198.18.1.2:8471", funcr.New(logs.add, funcr.Options{}), func(string) (string, error) {
		calls++
		if err := results[calls-1]; err != nil {
			return "", err
		}
		return "198.18.1.2:8471", nil
	})
	b.explain = func(_ string, err error) error { return err }
	b.backoff = delay.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}
	if !b.run(t.Context(), inUse) {
		t.Fatal("run returned false before its context ended")
	}
	if n := logs.count("still cannot listen on the health server's address"); n != 1 {
		t.Errorf("%d lines at the default verbosity say the bind failed for the new cause, want 1:\n%s", n, strings.Join(logs.get(), "\n"))
	}
}

// TestHealthBindWaitsBetweenBinds: the binds after the first failed one
// wait healthBindMin at first, then twice as long, each delay drawn from
// its second half: a port held for days is asked for a few times a
// minute, not in a loop.
func TestHealthBindWaitsBetweenBinds(t *testing.T) {
	inUse := fmt.Errorf("health server: listen tcp :8471: bind: %w", syscall.EADDRINUSE)
	var at []time.Time
	b := newHealthBind(":8471", funcr.New(func(string, string) {}, funcr.Options{}), func(string) (string, error) {
		at = append(at, time.Now())
		if len(at) < 2 {
			return "", inUse
		}
		return "[::]:8471", nil
	})
	began := time.Now()
	if !b.run(t.Context(), inUse) {
		t.Fatal("run returned false before its context ended")
	}
	prev := began
	for i, want := range []time.Duration{healthBindMin / 2, healthBindMin} {
		if gap := at[i].Sub(prev); gap < want {
			t.Errorf("bind %d came %s after the one before; want at least %s", i+2, gap, want)
		}
		prev = at[i]
	}
}
