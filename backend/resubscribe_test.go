package backend_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// TestResubscribeFailuresBounded: when a subscription ends and subscribing
// again keeps failing, each failure is retried as before, but logged at
// -v=0 three times (the first at once, the third saying that the next go
// to -v=2 until when), the rest at -v=2, each with the number of failures
// in a row; the subscription that ends them says so at -v=0. Before, each
// failure was logged at -v=0: one every 5 s, 720 an hour. The failure is
// the kernel's own: the namespace's descriptor WatchEvents was given is
// made /dev/null's, which setns refuses, and made the namespace's again.
func TestResubscribeFailuresBounded(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	fd, err := unix.Dup(int(ns.NsHandle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer devNull.Close()
	var log levelLog
	subscriptions := watchInTest(t, backend.EventFilter{Neigh: func(backend.NeighEvent) bool { return false }}, func(ctx context.Context, f backend.EventFilter) error {
		return backend.WatchEventsRefusing(ctx, netns.NsHandle(fd), log.logger(), f, func() {}, inFlood)
	})
	subscribed := func(n int64) func() error {
		return func() error {
			if got := subscriptions.Load(); got < n {
				return fmt.Errorf("%d subscriptions, want %d", got, n)
			}
			return nil
		}
	}

	// From here on, setns(fd) fails: EINVAL, not a namespace.
	if err := unix.Dup3(int(devNull.Fd()), fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	// A refused neighbour ends the subscription.
	for i := 0; len(log.with("netlink event subscription ended")) == 0; i++ {
		if i == 2000 {
			t.Fatal("no end of the subscription after 2000 refused neighbours")
		}
		floodOnce(t, ns.Handle, ext, i)
	}
	const failures = 5 // some 0.4 to 0.75 s of retries
	nstest.Await(t, 10*time.Second, "failures to subscribe again", func() error {
		if got := len(log.with("subscribe to netlink events; retrying")); got < failures {
			return fmt.Errorf("%d failures logged, want %d", got, failures)
		}
		return nil
	})
	if err := unix.Dup3(int(ns.NsHandle), fd, unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	nstest.Await(t, 10*time.Second, "the subscription once the namespace is back", subscribed(2))

	all := log.with("subscribe to netlink events; retrying")
	loud := log.with(`"error"=`, "subscribe to netlink events; retrying")
	quiet := log.with(`"level"=2`, "subscribe to netlink events; retrying")
	if len(all) < failures || len(loud)+len(quiet) != len(all) {
		t.Fatalf("failures logged:\n%s\nwant %d or more, each at -v=0 or -v=2", strings.Join(all, "\n"), failures)
	}
	for i, l := range all {
		if !strings.Contains(l, fmt.Sprintf(`"failures"=%d `, i+1)) || !strings.Contains(l, "setns") && !strings.Contains(l, "invalid argument") {
			t.Errorf("failure %d logged as %s; want \"failures\"=%d and setns's error", i+1, l, i+1)
		}
	}
	if len(loud) != 3 || !strings.Contains(loud[2], "more such failures are logged at -v=2 only until ") {
		t.Errorf("failures logged at -v=0:\n%s\nwant the first 3 of the %d, the third saying the next go to -v=2", strings.Join(loud, "\n"), len(all))
	}
	again := log.with(`"level"=0`, "subscribed to netlink events again", fmt.Sprintf(`"failures"=%d`, len(all)))
	if len(again) != 1 {
		t.Errorf("logged %q at -v=0 with \"failures\"=%d %d times, want once:\n%s", "subscribed to netlink events again", len(all), len(again),
			strings.Join(log.with("subscribed to netlink events again"), "\n"))
	}
	t.Logf("%d failures, %d logged at -v=0", len(all), len(loud))
}
