package agent

import (
	"context"
	"net/netip"
	"slices"
	"sync"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// followSegment judges the key again when this host's segment changes
// while the verdict depends on it (directSplit: a VNI or Port change with
// DirectRouting on both sides), as peersSeen does when the peers change:
// an operator who renumbers the external interface, or adds or deletes the
// route that puts a peer's network on it, finds the verdict of the segment
// as it is now in /status, and its kind changing logged once, with
// judgedAgain="this host's segment changed".
//
// The segment is what directPeers reads (backend.ReadSegment): the
// external interface's addresses, its main table's scope-link routes
// without a gateway, and whether a peer's public IP is an address of this
// host. So followSegment follows the events about those (the address
// events of the interface and of the peers' public IPs,
// backend.SegmentRouteEvent's routes), through a subscription held only
// while directKey is set: a host whose verdict does not depend on its
// segment, or that runs no DirectRouting, parses no route event for it.
// Once subscribed it reads the segment again (segmentChanged), for a
// change between the verdict and the subscription. A policy rule, or a
// route in another table, that puts the subnet of a noprefixroute address
// on-link (backend's gatewayOnLink) sends no such event: it is judged at
// the next change of the key, the peers or the events followed.
func (w *configWatch) followSegment(ctx context.Context) {
	w.mu.Lock()
	on := w.directOnLocked()
	w.mu.Unlock()
	for {
		for !w.dependsOnSegment() {
			select {
			case <-ctx.Done():
				return
			case <-on:
			}
		}
		w.followSegmentWhileOn(ctx, on)
		if ctx.Err() != nil {
			return
		}
	}
}

// followSegmentWhileOn follows the segment's events (followSegment) until
// the verdict no longer depends on it (on signalled, directKey unset) or
// ctx is done.
func (w *configWatch) followSegmentWhileOn(ctx context.Context, on <-chan struct{}) {
	sctx, cancel := context.WithCancel(ctx)
	changed := make(chan struct{}, 1)
	wake := func() { signal(changed) }
	ended := make(chan error, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		ended <- backend.WatchEvents(sctx, netns.None(), w.log, backend.EventFilter{
			Addr:       w.segmentAddrEvent,
			Route:      backend.SegmentRouteEvent(w.segmentIndex),
			Subscribed: wake,
		}, wake)
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-on:
			if !w.dependsOnSegment() {
				return
			}
		case <-changed:
			w.segmentChanged()
		case err := <-ended:
			// Only the first subscription's failure ends WatchEvents
			// before ctx: the next verdict that depends on the
			// segment subscribes anew.
			w.log.Error(err, "cannot follow this host's segment for the pending DirectRouting verdict; it is judged again when the key or the peers change")
			for w.dependsOnSegment() {
				select {
				case <-ctx.Done():
					return
				case <-on:
				}
			}
			return
		}
	}
}

// segmentAddrEvent accepts the address events that may change the
// segment as directPeers reads it: those of the external interface, and
// those of a peer's public IP on any link (an address of this host is no
// peer's).
func (w *configWatch) segmentAddrEvent(u netlink.AddrUpdate) bool {
	if u.LinkIndex == w.segmentIndex {
		return true
	}
	a, ok := backend.AddrFromIP(u.LinkAddress.IP)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	_, found := slices.BinarySearchFunc(w.directFor, a, netip.Addr.Compare)
	return found
}

// dependsOnSegment reports whether the verdict depends on this host's
// segment now (directKey set).
func (w *configWatch) dependsOnSegment() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.directKey != ""
}

// segmentChanged judges the key again, as it stands, after an event about
// this host's segment, if the verdict still depends on it and the segment
// puts another number of the same peers on it than the verdict counted.
// Other peers than those counted are peersSeen's to judge, at the
// reconcile loop's pass for them, which reads the segment as it is then:
// judged here, their change would be said to be the segment's.
func (w *configWatch) segmentChanged() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.directKey == "" || !w.seenOK || !w.directForOK || w.direct == nil {
		return
	}
	c, ok := w.direct(w.running)
	if !ok || !slices.Equal(c.peers, w.directFor) || c.direct == w.directOnSegment {
		return
	}
	w.judgeLocked(w.seen, "judgedAgain", "this host's segment changed")
}

// directOnLocked is directOn, made if need be, with w.mu held.
func (w *configWatch) directOnLocked() chan struct{} {
	if w.directOn == nil {
		w.directOn = make(chan struct{}, 1)
	}
	return w.directOn
}
