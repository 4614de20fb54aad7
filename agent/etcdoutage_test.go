package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// fakeConn is a connection whose state the test sets. It records each state
// the reporter waited on, so that the test can change the state only once the
// reporter has seen (and acted on) the previous one.
type fakeConn struct {
	mu      sync.Mutex
	state   connectivity.State
	changed chan struct{} // closed and replaced on every change
	waited  []connectivity.State
	waiting chan struct{} // closed and replaced on every wait
}

var _ connState = (*fakeConn)(nil)

func newFakeConn() *fakeConn {
	return &fakeConn{state: connectivity.Ready, changed: make(chan struct{}), waiting: make(chan struct{})}
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

func (f *fakeConn) ResetConnectBackoff() {}

func (f *fakeConn) WaitForStateChange(ctx context.Context, s connectivity.State) bool {
	f.mu.Lock()
	f.waited = append(f.waited, s)
	close(f.waiting)
	f.waiting = make(chan struct{})
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

// waitFor waits until the reporter has waited n times in all, the last time
// on state s: it has then read s and done all it does on seeing it.
func (f *fakeConn) waitFor(t *testing.T, n int, s connectivity.State) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		waited, ch := slices.Clone(f.waited), f.waiting
		f.mu.Unlock()
		if len(waited) > n || len(waited) == n && waited[n-1] != s {
			t.Fatalf("reporter waited on %v, want %d waits, the last on %v", waited, n, s)
		}
		if len(waited) == n {
			return
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("reporter waited on %v, want %d waits, the last on %v", waited, n, s)
		}
	}
}

// waits is how often the reporter has waited so far.
func (f *fakeConn) waits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waited)
}

// step sets the state and waits until the reporter has seen it.
func (f *fakeConn) step(t *testing.T, s connectivity.State) {
	t.Helper()
	n := f.waits()
	f.set(s)
	f.waitFor(t, n+1, s)
}

// fakeClock is a clock that moves only in advance. Its deadlines end their
// context when advance passes them.
type fakeClock struct {
	mu        sync.Mutex
	now       time.Time
	deadlines map[*time.Time]context.CancelFunc
}

var _ clock = (*fakeClock)(nil)

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), deadlines: map[*time.Time]context.CancelFunc{}}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) WithDeadline(ctx context.Context, d time.Time) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !d.After(c.now) {
		cancel()
		return ctx, cancel
	}
	key := &d
	c.deadlines[key] = cancel
	return ctx, func() {
		c.mu.Lock()
		delete(c.deadlines, key)
		c.mu.Unlock()
		cancel()
	}
}

// advance moves the clock on by d and ends the contexts whose deadline it
// passed.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for at, cancel := range c.deadlines {
		if !at.After(c.now) {
			cancel()
			delete(c.deadlines, at)
		}
	}
}

// pending returns the deadlines not yet passed nor cancelled.
func (c *fakeClock) pending() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Time
	for at := range c.deadlines {
		ds = append(ds, *at)
	}
	return ds
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

// expect checks that exactly n lines were logged by now. The reporter logs
// before it waits, so once conn.waitFor returned, all it was going to log
// is there.
func (l *logLines) expect(t *testing.T, n int) {
	t.Helper()
	if got := l.get(); len(got) != n {
		t.Fatalf("%d log lines, want %d:\n%s", len(got), n, strings.Join(got, "\n"))
	}
}

// TestReportOutages: a blip shorter than the grace period is not logged; a
// longer outage is logged once however often the connection retries, with
// the probe's finding, and its end once, with its length. The finding goes
// to cause, again every reprobe interval while the outage lasts (it may
// change), and nil at the end.
//
// The reporter's clock is fake and each state is set only after the reporter
// has seen the one before, so every transition is observed and no time
// passes but what the test advances.
func TestReportOutages(t *testing.T) {
	conn := newFakeConn()
	clk := newFakeClock()
	var logs logLines
	var mu sync.Mutex
	probes, finding := 0, "connect: connection refused"
	var causes []string
	const grace, reprobe = 3 * time.Second, 10 * time.Second
	r := &outageReporter{
		conn: conn,
		probe: func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			probes++
			return errors.New(finding)
		},
		cause: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			c := "<nil>"
			if err != nil {
				c = err.Error()
			}
			causes = append(causes, c)
		},
		endpoints: []string{"http://etcd:2379"},
		grace:     grace,
		reprobe:   reprobe,
		clock:     clk,
		log:       funcr.New(logs.add, funcr.Options{}),
	}
	wantCauses := func(when string, want ...string) {
		t.Helper()
		mu.Lock()
		defer mu.Unlock()
		if !slices.Equal(causes, want) {
			t.Fatalf("%s: causes %q, want %q", when, causes, want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	conn.waitFor(t, 1, connectivity.Ready)

	// noDeadline checks that the reporter waits for nothing but a change.
	noDeadline := func(when string) {
		t.Helper()
		if p := clk.pending(); len(p) != 0 {
			t.Fatalf("%s: reporter waits until %v, want no deadline", when, p)
		}
	}
	// deadlineAt checks that the reporter waits for a change until at.
	deadlineAt := func(when string, at time.Time) {
		t.Helper()
		if p := clk.pending(); len(p) != 1 || !p[0].Equal(at) {
			t.Fatalf("%s: reporter waits until %v, want %v", when, p, at)
		}
	}

	// A blip: down and back within the grace period.
	down := clk.Now()
	conn.step(t, connectivity.Connecting)
	deadlineAt("connecting", down.Add(grace))
	logs.expect(t, 0)
	clk.advance(grace - time.Second)
	conn.step(t, connectivity.Ready)
	noDeadline("back within the grace period")
	clk.advance(2 * grace)
	logs.expect(t, 0)
	wantCauses("after a blip")

	// An outage: many failed attempts, one line, once the grace period is
	// over.
	down = clk.Now()
	for range 5 {
		conn.step(t, connectivity.Connecting)
		conn.step(t, connectivity.TransientFailure)
		deadlineAt("retrying", down.Add(grace))
		clk.advance(grace / 10)
	}
	logs.expect(t, 0)
	n := conn.waits()
	clk.advance(grace - 5*grace/10)
	// Past the deadline the reporter logs and waits again, for a change
	// or the next probe.
	conn.waitFor(t, n+1, connectivity.TransientFailure)
	logs.expect(t, 1)
	wantCauses("outage reported", "connect: connection refused")
	probed := clk.Now()
	deadlineAt("outage reported", probed.Add(reprobe))
	for range 5 {
		conn.step(t, connectivity.Idle)
		conn.step(t, connectivity.Connecting)
		conn.step(t, connectivity.TransientFailure)
		clk.advance(reprobe / 10)
	}
	deadlineAt("retrying after the report", probed.Add(reprobe))
	// The cause changes while the outage goes on: found at the next
	// probe, not logged again.
	mu.Lock()
	finding = "TLS handshake: x509: certificate signed by unknown authority"
	mu.Unlock()
	n = conn.waits()
	clk.advance(reprobe - 5*reprobe/10)
	conn.waitFor(t, n+1, connectivity.TransientFailure)
	deadlineAt("probed again", probed.Add(2*reprobe))
	wantCauses("probed again", "connect: connection refused", finding)
	logs.expect(t, 1)
	conn.step(t, connectivity.Ready)
	logs.expect(t, 2)
	noDeadline("back")
	wantCauses("back", "connect: connection refused", finding, "<nil>")
	lines := logs.get()
	for i, want := range []string{
		`"msg"="etcd unreachable; the datapath stays as it is, lease changes will be applied once etcd is back; retrying quietly" "error"="connect: connection refused" "endpoints"=["http://etcd:2379"] "downFor"="3s"`,
		`"msg"="etcd reachable again" "endpoints"=["http://etcd:2379"] "downFor"="13s"`,
	} {
		if !strings.Contains(lines[i], want) {
			t.Errorf("line %d:\n%s\nwant it to contain\n%s", i+1, lines[i], want)
		}
	}

	// The next outage is reported again.
	conn.step(t, connectivity.TransientFailure)
	logs.expect(t, 2)
	n = conn.waits()
	clk.advance(grace)
	conn.waitFor(t, n+1, connectivity.TransientFailure)
	logs.expect(t, 3)
	if l := logs.get()[2]; !strings.Contains(l, "etcd unreachable") {
		t.Errorf("second outage logged as %s", l)
	}
	mu.Lock()
	if probes != 3 {
		t.Errorf("etcd probed %d times for 2 outages, one of them probed again", probes)
	}
	mu.Unlock()

	conn.set(connectivity.Shutdown)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return when the connection shut down")
	}
}

// TestStatusEtcdErrorCause: during an etcd outage /status's etcdError (and
// so agentctl status) names what a connection attempt finds, here that
// etcd refuses connections; it said only "reconnecting", and the cause was
// in the log alone.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries a one-member etcd at
// 127.0.0.1:2379. The agent's client keeps a watch open, as the agent does,
// so that it reconnects; etcd is then stopped.
func TestStatusEtcdErrorCause(t *testing.T) {
	inOwnNetns(t, statusEtcdErrorCauseChild)
}

func statusEtcdErrorCauseChild(t *testing.T) {
	loopbackUp(t)
	e, stop := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", e)
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379"}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	obs := newObserver()
	h := newHealth(logr.Discard())
	obs.watchEtcd(func() bool { return c.ActiveConnection().GetState() == connectivity.Ready })
	var logs logLines
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.reportOutages(ctx, funcr.New(logs.add, funcr.Options{}), obs.etcdUnreachable)
	}()
	defer func() {
		cancel()
		<-done
	}()
	c.Watch(clientv3.WithRequireLeader(ctx), "/watched")
	if _, err := c.Get(ctx, "/watched"); err != nil {
		t.Fatal(err)
	}
	if st := obs.status(h); !st.EtcdConnected || st.EtcdError != "" {
		t.Fatalf("etcd up: etcdConnected %v, etcdError %q", st.EtcdConnected, st.EtcdError)
	}

	stop()
	var last Status
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		last = obs.status(h)
		if last.EtcdConnected || !strings.HasPrefix(last.EtcdError, "connection to etcd is down; reconnecting: ") ||
			!strings.Contains(last.EtcdError, "connect: connection refused") {
			return fmt.Errorf("etcdConnected %v, etcdError %q", last.EtcdConnected, last.EtcdError)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("etcd stopped: %v; want etcdError to say the connection is refused", err)
	}
	t.Logf("etcdError: %s", last.EtcdError)
	// Whoever reads the cause in /status finds the outage in the log.
	if got := logs.get(); len(got) != 1 || !strings.Contains(got[0], `"msg"="etcd unreachable;`) || !strings.Contains(got[0], "connection refused") {
		t.Errorf("etcdError names the cause, and the log holds %q; want the outage's line, naming it", got)
	}
}

// TestStatusEtcdErrorOneLine: the failures of several endpoints, which the
// probe joins with newlines, make one line of etcdError, as agentctl status
// prints it; once etcd is reachable again the cause goes.
func TestStatusEtcdErrorOneLine(t *testing.T) {
	obs := newObserver()
	h := newHealth(logr.Discard())
	up := false
	obs.watchEtcd(func() bool { return up })
	obs.etcdUnreachable(errors.Join(errors.New("http://a:2379: connect: connection refused"), errors.New("http://b:2379: connect: no route to host")))
	const want = "connection to etcd is down; reconnecting: http://a:2379: connect: connection refused; http://b:2379: connect: no route to host"
	if got := obs.status(h).EtcdError; got != want {
		t.Fatalf("etcdError %q, want %q", got, want)
	}
	obs.etcdUnreachable(nil)
	if got := obs.status(h).EtcdError; got != "connection to etcd is down; reconnecting" {
		t.Fatalf("etcdError after the cause was cleared: %q", got)
	}
}
