package backend_test

import (
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
)

// The scaffolding of the tests that compare the events agentd's own
// subscription reads (WatchEvents) with those netlink's subscriptions hand
// over for the same kernel messages, side by side.

// shownEvents is what agentd's subscription handed over, each event as a
// test prints it.
type shownEvents struct {
	mu     sync.Mutex
	events []string
}

func (s *shownEvents) add(event string) {
	s.mu.Lock()
	s.events = append(s.events, event)
	s.mu.Unlock()
}

// ipv6Ext is a test namespace whose ext0 (198.18.0.1/24, its peer peer0)
// has IPv6 on, which nstest turns off: for the events of IPv6 addresses,
// routes and neighbours.
func ipv6Ext(t *testing.T) (*nstest.NS, netlink.Link) {
	t.Helper()
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := ns.Sysctl("net.ipv6.conf.ext0.disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	return ns, ext
}

// unheldWatch runs WatchEvents in ns with filter f (Subscribed set here)
// until the test ends, and returns once it has subscribed. Each wake is a
// value on wakes, dropped while one is waiting.
func unheldWatch(t *testing.T, ns *nstest.NS, f backend.EventFilter) (wakes <-chan struct{}) {
	t.Helper()
	unblock, _, wakes := stalledWatch(t, ns, logr.Discard(), f)
	unblock()
	return wakes
}

// netlinkEvents subscribes with subscribe, one of netlink's
// …SubscribeWithOptions, until the test ends, and returns the channel of n
// it hands its updates over on.
func netlinkEvents[U any](t *testing.T, n int, subscribe func(ch chan<- U, done <-chan struct{}) error) <-chan U {
	t.Helper()
	ch := make(chan U, n)
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	if err := subscribe(ch, done); err != nil {
		t.Fatal(err)
	}
	return ch
}

// sameAsNetlink takes netlink's updates from theirs, as show prints them,
// after want (those taken already), up to the one that last says is the
// last (within 5 s), then waits up to 5 s for ours, which agentd's
// subscription fills, to hold the same; what and sub name the kind of
// event and netlink's subscription. It returns netlink's updates.
func sameAsNetlink[U any](t *testing.T, what, sub string, theirs <-chan U, want []string, show func(U) string, last func(string) bool, ours *shownEvents) []string {
	t.Helper()
	for deadline := time.After(5 * time.Second); len(want) == 0 || !last(want[len(want)-1]); {
		select {
		case u := <-theirs:
			want = append(want, show(u))
		case <-deadline:
			t.Fatalf("after 5s, netlink's subscription handed over\n%s", strings.Join(want, "\n"))
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ours.mu.Lock()
		got := slices.Clone(ours.events)
		ours.mu.Unlock()
		if slices.Equal(got, want) {
			return want
		}
		if len(got) >= len(want) || time.Now().After(deadline) {
			t.Fatalf("%s events\n%s\nwant, as netlink's %s,\n%s", what, strings.Join(got, "\n"), sub, strings.Join(want, "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
