package backend_test

import (
	"context"
	"errors"
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
	bad := netip.MustParsePrefix("10.244.66.0/24")
	good := netip.MustParseAddr("10.244.1.1")
	var log levelLog
	var subscriptions, wakes atomic.Int64
	seenGood := make(chan struct{}, 1)
	_, othersBefore := backend.EventResubscriptions()
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		stopped <- backend.WatchEventsRefusing(ctx, ns.NsHandle, log.logger(), backend.EventFilter{
			Neigh: func(u backend.NeighEvent) bool {
				if ip, ok := backend.AddrFromIP(u.IP); ok && ip == good {
					select {
					case seenGood <- struct{}{}:
					default:
					}
				}
				return false
			},
			Subscribed: func() { subscriptions.Add(1) },
		}, func() { wakes.Add(1) }, func(u backend.NeighEvent) bool {
			ip, ok := backend.AddrFromIP(u.IP)
			return ok && bad.Contains(ip)
		})
	}()
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

	// The stream: refused neighbours added and deleted, until the first
	// subscription and four more, after four ends, are in place.
	const want = 5
	start := time.Now()
	for i := 0; subscriptions.Load() < want; i++ {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("after 20s of refused events, %d subscriptions, want %d", subscriptions.Load(), want)
		}
		n := &netlink.Neigh{LinkIndex: ext.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: net.IPv4(10, 244, 66, byte(1+i%200)), HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0x66, byte(i)}}
		if err := ns.Handle.NeighAdd(n); err != nil {
			t.Fatal(err)
		}
		if err := ns.Handle.NeighDel(n); err != nil {
			t.Fatal(err)
		}
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
