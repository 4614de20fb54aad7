package backend_test

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/go-logr/logr"
)

// stalledWatchChildEnv is set in the environment of the child process
// that TestStalledWatchResubscribing runs its watch in.
const stalledWatchChildEnv = "BACKEND_TEST_STALLED_WATCH_CHILD"

// TestStalledWatchResubscribing: a watch of stalledWatch's (and so of
// unheldWatch's) whose subscription ends four times while the test takes
// none of the subscriptions fails the test with a message when it ends.
// Before, the fourth subscription waited in Subscribed for the test to take
// one, and the test's cleanup waited for WatchEvents forever: go test's
// -timeout, 30 minutes in make test, ended the run. The watch runs in a
// child process, which fails, and which is killed after a minute.
func TestStalledWatchResubscribing(t *testing.T) {
	if os.Getenv(stalledWatchChildEnv) != "" {
		resubscribingWatch(t)
		return
	}
	nstest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := testchild.Run(ctx, t, "TestStalledWatchResubscribing", nil, stalledWatchChildEnv+"=1")
	if ctx.Err() != nil {
		t.Fatalf("the child was still running after a minute, and was killed:\n%s", out)
	}
	if want := "WatchEvents subscribed again while the test had yet to take two subscriptions"; err == nil || !strings.Contains(string(out), want) {
		t.Fatalf("the child: %v\n%s\nwant it failed with %q", err, out, want)
	}
}

// resubscribingWatch is TestStalledWatchResubscribing's child: a watch of
// stalledWatchOf, unblocked, whose subscription ends four times (an overrun
// of one event each, see WatchEventsOverrunning).
func resubscribingWatch(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	before, _ := backend.EventResubscriptions()
	unblock, _, _ := stalledWatchOf(t, backend.EventFilter{Neigh: func(backend.NeighEvent) bool { return false }}, func(ctx context.Context, f backend.EventFilter, wake func()) error {
		return backend.WatchEventsOverrunning(ctx, ns.NsHandle, logr.Discard(), f, wake, inFlood)
	})
	unblock()
	const overruns = 4
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		o, _ := backend.EventResubscriptions()
		if o-before >= overruns {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20s, %d overruns, want %d", o-before, overruns)
		}
		floodOnce(t, ns.Handle, ext, i)
	}
}
