package backend

import (
	"context"
	"fmt"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
)

// EventSocketBuffer is eventSocketBuffer, for tests that overrun it.
const EventSocketBuffer = eventSocketBuffer

// WatchEventsRefusing is WatchEvents, but a neighbour event that refuse
// says true of ends its receive's events as an unreadable message does
// (readEvents): a kernel sending messages agentd cannot read, which no
// mainline kernel does.
func WatchEventsRefusing(ctx context.Context, ns netns.NsHandle, log logr.Logger, f EventFilter, wake func(), refuse func(NeighEvent) bool) error {
	r := ownReaders
	r.neighs = func(msgs []syscall.NetlinkMessage) ([]NeighEvent, error) {
		evs, err := neighEvents(msgs)
		for i, ev := range evs {
			if refuse(ev) {
				return evs[:i], fmt.Errorf("unreadable neighbour message (refused by the test: %v)", ev.IP)
			}
		}
		return evs, err
	}
	return watchEvents(ctx, ns, log, f, wake, r)
}
