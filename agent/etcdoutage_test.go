package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc/connectivity"
)

// fakeConn is a connection whose state the test sets.
type fakeConn struct {
	mu      sync.Mutex
	state   connectivity.State
	changed chan struct{} // closed and replaced on every change
}

var _ connState = (*fakeConn)(nil)

func newFakeConn() *fakeConn {
	return &fakeConn{state: connectivity.Ready, changed: make(chan struct{})}
}

func (f *fakeConn) set(s connectivity.State) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state = s
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeConn) GetState() connectivity.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state
}

func (f *fakeConn) WaitForStateChange(ctx context.Context, s connectivity.State) bool {
	f.mu.Lock()
	if f.state != s {
		f.mu.Unlock()
		return true
	}
	ch := f.changed
	f.mu.Unlock()
	select {
	case <-ctx.Done():
		return false
	case <-ch:
		return true
	}
}

// logLines collects what a logger printed at verbosity 0.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, args)
}

func (l *logLines) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...)
}

// waitLines waits until exactly n lines were logged.
func (l *logLines) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := l.get()
		if len(got) == n {
			return got
		}
		if len(got) > n || time.Now().After(deadline) {
			t.Fatalf("%d log lines, want %d:\n%s", len(got), n, strings.Join(got, "\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestReportOutages: a blip shorter than the grace period is not logged; a
// longer outage is logged once however often the connection retries, with
// the probe's finding, and its end once, with its length.
func TestReportOutages(t *testing.T) {
	conn := newFakeConn()
	var logs logLines
	probes := 0
	r := &outageReporter{
		conn:      conn,
		probe:     func(context.Context) error { probes++; return errors.New("connect: connection refused") },
		endpoints: []string{"http://etcd:2379"},
		grace:     100 * time.Millisecond,
		log:       funcr.New(logs.add, funcr.Options{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()

	// A blip: down and back within the grace period.
	conn.set(connectivity.Connecting)
	conn.set(connectivity.Ready)
	time.Sleep(2 * r.grace)
	logs.waitLines(t, 0)

	// An outage: many failed attempts, one line.
	for range 5 {
		conn.set(connectivity.Connecting)
		conn.set(connectivity.TransientFailure)
	}
	logs.waitLines(t, 1)
	for range 5 {
		conn.set(connectivity.Idle)
		conn.set(connectivity.Connecting)
		conn.set(connectivity.TransientFailure)
	}
	time.Sleep(2 * r.grace)
	conn.set(connectivity.Ready)
	lines := logs.waitLines(t, 2)
	for i, want := range []string{
		`"msg"="etcd unreachable; the datapath stays as it is, lease changes will be applied once etcd is back; retrying quietly" "error"="connect: connection refused" "endpoints"=["http://etcd:2379"]`,
		`"msg"="etcd reachable again" "endpoints"=["http://etcd:2379"] "downFor"=`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d:\n%s\nwant it to contain\n%s", i+1, lines[i], want)
		}
	}

	// The next outage is reported again.
	conn.set(connectivity.TransientFailure)
	if l := logs.waitLines(t, 3)[2]; !strings.Contains(l, "etcd unreachable") {
		t.Errorf("second outage logged as %s", l)
	}
	if probes != 2 {
		t.Errorf("etcd probed %d times for 2 outages", probes)
	}

	conn.set(connectivity.Shutdown)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return when the connection shut down")
	}
	cancel()
}
