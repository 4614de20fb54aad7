package backend_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
)

// TestWatchEventsPacesUnreadable: a kernel that keeps sending neighbour
// messages agentd cannot read ends the subscription again and again. The
// first end is logged at once at -v=0 and subscribed again at once; the
// ones that follow are spaced by a growing delay, and past the third
// logged at -v=2 only. Every end is still counted and followed by a
// subscription and a wake (the full pass), and an event agentd can read is
// handed over once the stream stops. Before, each end was logged at -v=0
// and subscribed again at once: four ends, and a pass each, took a few
// milliseconds, as fast as the kernel sent.
func TestWatchEventsPacesUnreadable(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	good := netip.MustParseAddr("10.244.1.1")
	var log levelLog
	var wakes atomic.Int64
	seenGood := make(chan struct{}, 1)
	_, othersBefore := backend.EventResubscriptions()
	subscriptions := watchInTest(t, backend.EventFilter{
		Neigh: func(u backend.NeighEvent) bool {
			if ip, ok := backend.AddrFromIP(u.IP); ok && ip == good {
				select {
				case seenGood <- struct{}{}:
				default:
				}
			}
			return false
		},
	}, func(ctx context.Context, f backend.EventFilter) error {
		return backend.WatchEventsRefusing(ctx, ns.NsHandle, log.logger(), f, func() { wakes.Add(1) }, inFlood)
	})

	// The stream: refused neighbours added and deleted, one pair every
	// 2 ms (the delays are 125 ms and more), until the first subscription
	// and four more, after four ends, are in place.
	const want = 5
	start := time.Now()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		<-tick.C // before the check, so that no pair follows the last subscription
		if subscriptions.Load() >= want {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20s of refused events, %d subscriptions, want %d", subscriptions.Load(), want)
		}
		floodOnce(t, ns.Handle, ext, i)
	}
	// The delays before the second to fifth subscription are 0, then at
	// least 125, 250 and 500 ms (backoff from 250 ms, drawn from its
	// upper half).
	if took := time.Since(start); took < 800*time.Millisecond {
		t.Errorf("%d subscriptions after refused events took %v; want ends that follow one another spaced, 875 ms at least", want, took)
	}

	// Once the stream stops, an event agentd reads is handed over, after
	// the pending delay.
	for i := 0; ; i++ {
		n := &netlink.Neigh{LinkIndex: ext.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: backend.IP(good), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 1, byte(i)}}
		if err := ns.Handle.NeighSet(n); err != nil {
			t.Fatal(err)
		}
		select {
		case <-seenGood:
		case <-time.After(100 * time.Millisecond):
			if time.Since(start) > 30*time.Second {
				t.Fatalf("no event of %s within 30s", good)
			}
			continue
		}
		break
	}
	// The good event came on the last subscription, whose wake is done.
	subs := subscriptions.Load()
	if w := wakes.Load(); w != subs-1 {
		t.Errorf("%d wakes for %d subscriptions after an end; want a wake (a full pass) after each", w, subs-1)
	}
	if _, others := backend.EventResubscriptions(); others-othersBefore != uint64(subs-1) {
		t.Errorf("agentd_netlink_resubscriptions_total{reason=\"error\"} went up by %d, want %d", others-othersBefore, subs-1)
	}
	ended := log.with("netlink event subscription ended")
	loud := log.with(`"level"=0`, "netlink event subscription ended")
	if len(ended) != int(subs-1) {
		t.Errorf("%d ends logged for %d subscriptions after an end:\n%s", len(ended), subs-1, strings.Join(ended, "\n"))
	}
	if len(loud) != 3 || !strings.Contains(loud[0], `"in"="0s"`) || !strings.Contains(loud[2], "-v=2 only until") {
		t.Errorf("logged at -v=0:\n%s\nwant 3 lines of the %d ends: the first subscribing again at once (\"in\"=\"0s\"), the third saying the next go to -v=2",
			strings.Join(loud, "\n"), len(ended))
	}
	t.Logf("%d subscriptions, %d ends logged, %d at -v=0", subs, len(ended), len(loud))
}

// TestWatchEventsOverrunsAtOnce: overruns one after another, each within a
// minute of the subscription before, are each followed at once by a
// subscription and a wake (the full pass), since events were lost and only
// that pass repairs what they said (DESIGN §4.1: within 1 s). Before, they
// were paced as unreadable messages are: the fifth waited 1 to 2 s, the
// sixth 2 to 4 s, up to a minute with no subscription.
func TestWatchEventsOverrunsAtOnce(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	var log levelLog
	var wakes atomic.Int64
	overrunsBefore, othersBefore := backend.EventResubscriptions()
	subscriptions := watchInTest(t, backend.EventFilter{Neigh: func(backend.NeighEvent) bool { return false }}, func(ctx context.Context, f backend.EventFilter) error {
		return backend.WatchEventsOverrunning(ctx, ns.NsHandle, log.logger(), f, func() { wakes.Add(1) }, inFlood)
	})

	// One neighbour added per overrun, once the subscription before it and
	// its wake are in place.
	const overruns = 6
	var slowest time.Duration
	for i := range overruns {
		start := time.Now()
		if err := ns.Handle.NeighAdd(floodNeigh(ext, i)); err != nil {
			t.Fatal(err)
		}
		for subscriptions.Load() < int64(i+2) || wakes.Load() < int64(i+1) {
			if took := time.Since(start); took > time.Second {
				t.Fatalf("overrun %d: after %v, %d subscriptions and %d wakes, want %d and %d within 1s; logged:\n%s",
					i+1, took.Round(time.Millisecond), subscriptions.Load(), wakes.Load(), i+2, i+1,
					strings.Join(log.with("overrun"), "\n"))
			}
			time.Sleep(time.Millisecond)
		}
		slowest = max(slowest, time.Since(start))
	}
	if s, w := subscriptions.Load(), wakes.Load(); s != overruns+1 || w != overruns {
		t.Errorf("%d subscriptions and %d wakes after %d overruns, want %d and %d", s, w, overruns, overruns+1, overruns)
	}
	if o, others := backend.EventResubscriptions(); o-overrunsBefore != overruns || others != othersBefore {
		t.Errorf("EventResubscriptions went up by %d overruns and %d others, want %d and 0", o-overrunsBefore, others-othersBefore, overruns)
	}
	if got := log.with(`"level"=2`, "netlink event socket overrun; subscribing again", fmt.Sprintf(`"overruns"=%d`, overruns)); len(got) != 1 {
		t.Errorf("logged at -v=2 %q; want overrun lines counting up to %d", log.with("overrun"), overruns)
	}
	if got := log.with(`"level"=0`); len(got) > 0 {
		t.Errorf("logged at -v=0: %q", got)
	}
	t.Logf("%d overruns, each subscribed again and woken within %v", overruns, slowest.Round(time.Microsecond))
}

// watchInTest runs watch, a WatchEvents variant given the test's context
// and f, whose Subscribed it sets, until the test ends, when it must return
// context.Canceled, and waits for its first subscription. It returns the
// count of subscriptions.
func watchInTest(t *testing.T, f backend.EventFilter, watch func(ctx context.Context, f backend.EventFilter) error) *atomic.Int64 {
	t.Helper()
	var subscriptions atomic.Int64
	f.Subscribed = func() { subscriptions.Add(1) }
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- watch(ctx, f) }()
	t.Cleanup(func() {
		cancel()
		if err := <-stopped; !errors.Is(err, context.Canceled) {
			t.Errorf("WatchEvents returned %v, want context.Canceled", err)
		}
	})
	nstest.Await(t, 5*time.Second, "the first subscription", func() error {
		if subscriptions.Load() == 0 {
			return errors.New("none yet")
		}
		return nil
	})
	return &subscriptions
}

// flood holds the neighbours that the pacing, overrun and resubscription
// tests have WatchEvents refuse, or overrun on.
var flood = netip.MustParsePrefix("10.244.66.0/24")

// inFlood reports whether u is of a neighbour in flood.
func inFlood(u backend.NeighEvent) bool {
	ip, ok := backend.AddrFromIP(u.IP)
	return ok && flood.Contains(ip)
}

// floodNeigh is the i-th permanent neighbour in flood on link: 200 of
// them, then the same again.
func floodNeigh(link netlink.Link, i int) *netlink.Neigh {
	return &netlink.Neigh{LinkIndex: link.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
		IP: net.IPv4(10, 244, 66, byte(1+i%200)), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0x66, byte(i)}}
}

// floodOnce adds floodNeigh(link, i) through h and deletes it again.
func floodOnce(t *testing.T, h *netlink.Handle, link netlink.Link, i int) {
	t.Helper()
	n := floodNeigh(link, i)
	if err := h.NeighAdd(n); err != nil {
		t.Fatal(err)
	}
	if err := h.NeighDel(n); err != nil {
		t.Fatal(err)
	}
}
