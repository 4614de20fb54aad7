package backend

import (
	"context"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// WatchEventsOverrunning is WatchEvents, but a neighbour event that overrun
// says true of ends its receive's events as a socket buffer overrun does:
// with ENOBUFS, as the receive that fails hands it over. A real overrun
// takes some 33000 events the reader has not taken
// (TestWatchEventsRecoversFromOverrun); this makes one of an event.
func WatchEventsOverrunning(ctx context.Context, ns netns.NsHandle, log logr.Logger, f EventFilter, wake func(), overrun func(NeighEvent) bool) error {
	r := ownReaders
	r.neighs = func(msgs []syscall.NetlinkMessage) ([]NeighEvent, error) {
		evs, err := neighEvents(msgs)
		for i, ev := range evs {
			if overrun(ev) {
				return evs[:i], unix.ENOBUFS
			}
		}
		return evs, err
	}
	return watchEvents(ctx, ns, log, f, wake, r)
}
