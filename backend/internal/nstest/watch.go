package nstest

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// RunWatch runs a backend's Watch until stop, which checks that it returns
// context.Canceled promptly (stop also runs at cleanup). subscribed is the
// backend's hook called once its subscriptions are in place; RunWatch sets
// it and returns after it was called. Each wake Watch asks for is a value on
// wakes (coalesced, as the agent's are).
func RunWatch(t testing.TB, watch func(ctx context.Context, wake func()) error, subscribed *func()) (wakes <-chan struct{}, stop func()) {
	t.Helper()
	woken := make(chan struct{}, 1)
	ready := make(chan struct{}, 1)
	*subscribed = func() {
		select {
		case ready <- struct{}{}:
		default:
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var err error
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		err = watch(ctx, func() {
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-stopped:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Watch returned %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Watch did not return within 5s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-ready:
	case <-stopped:
		t.Fatalf("Watch returned before subscribing: %v", err)
	}
	return woken, stop
}

// AwaitWake fails t unless wakes (RunWatch's) delivers within 5 s; after
// says what should have woken Watch.
func AwaitWake(t testing.TB, wakes <-chan struct{}, after string) {
	t.Helper()
	select {
	case <-wakes:
	case <-time.After(5 * time.Second):
		t.Fatalf("no wake within 5s after the %s", after)
	}
}

// AwaitLogged polls count, the number of a test logger's entries holding a
// string, until one holds marker, and fails t after 5 s with logs, the
// entries. The marker is the logged event of a change made after others
// whose events Watch reads from the same socket: once it is logged, so are
// theirs, and whether they woke Watch can be counted.
func AwaitLogged(t testing.TB, count func(string) int, marker string, logs func() string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for count(marker) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the marker %s woke nothing within 5s; logs:\n%s", marker, logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RunPasses runs pass at once and again after each wake on wakes
// (RunWatch's), one at a time in a goroutine of its own, as the agent's loop
// runs Reconcile, but with no resync ticker: what a test then sees changed
// in the kernel was done by a pass that Watch woke. A pass's error fails t.
// It returns once the first pass is done; the goroutine runs until the test
// ends.
func RunPasses(t testing.TB, wakes <-chan struct{}, pass func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	first, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for done := first; ; {
			if err := pass(); err != nil {
				t.Errorf("pass: %v", err)
			}
			if done != nil {
				close(done)
				done = nil
			}
			select {
			case <-ctx.Done():
				return
			case <-wakes:
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-stopped })
	<-first
}

// Await polls cond until it returns nil and fails t when it still fails
// within after the call; what says what was awaited.
func Await(t testing.TB, within time.Duration, what string, cond func() error) {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Since(start) > within {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Rejudging is a case of a backend's TestAddressChangeRejudgesPeers: an
// address of this host that decides whether Peer, one of All (the routes
// of ours of all peers, as Routes lists them), is skipped comes or goes
// (Change), and the passes Watch wakes must follow promptly.
type Rejudging struct {
	// Pass is one reconcile pass with the peers.
	Pass func() error
	// Watch runs the backend's Watch (RunWatch) and returns its wakes.
	Watch func() <-chan struct{}
	// Routes returns a check that the routes of ours are want, sorted.
	Routes func(want []string) func() error
	All    []string
	Peer   string
	// Held says the address is there before Change, which then deletes
	// it (Peer's route is missing before and back after); else Change adds
	// it (Peer's route goes).
	Held   bool
	Change func() error
}

// Run makes the first pass before Watch runs (the events of its own writes
// would wake a second pass, which might find the change on its own), then
// runs Watch and a pass per wake (RunPasses), checks the routes, makes the
// change and waits up to within for the routes to follow.
func (r Rejudging) Run(t testing.TB, within time.Duration) {
	t.Helper()
	if err := r.Pass(); err != nil {
		t.Fatal(err)
	}
	RunPasses(t, r.Watch(), r.Pass)
	without := slices.DeleteFunc(slices.Clone(r.All), func(s string) bool { return s == r.Peer })
	before, after := r.All, without
	if r.Held {
		before, after = without, r.All
	}
	if err := r.Routes(before)(); err != nil {
		t.Fatalf("before the change: %v", err)
	}
	start := time.Now()
	if err := r.Change(); err != nil {
		t.Fatal(err)
	}
	Await(t, within, "the routes after the change", r.Routes(after))
	t.Logf("the routes followed in %v", time.Since(start).Round(time.Millisecond))
}
