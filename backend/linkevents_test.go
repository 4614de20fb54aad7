package backend_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestWatchEventsLinks: link events, read by agentd's own subscription
// since netlink's panics on a message it cannot read (linkEvents), come as
// netlink's LinkSubscribe handed them over: a device's new MTU and its
// deletion each wake WatchEvents with the update of the device, its name,
// index and MTU, and the message's type.
func TestWatchEventsLinks(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	updates := make(chan netlink.LinkUpdate, 16)
	unblock, _, wakes := stalledWatch(t, ns, logr.Discard(), backend.EventFilter{
		Link: func(u netlink.LinkUpdate) bool {
			a := u.Attrs()
			if a.Name != "ext0" || u.Header.Type == unix.RTM_NEWLINK && a.MTU != 1400 {
				return false
			}
			select {
			case updates <- u:
			default:
			}
			return true
		},
	})
	unblock()
	for _, c := range []struct {
		what   string
		change func() error
		typ    uint16
	}{
		{"MTU set to 1400", func() error { return ns.Handle.LinkSetMTU(ext, 1400) }, unix.RTM_NEWLINK},
		{"device deleted", func() error { return ns.Handle.LinkDel(ext) }, unix.RTM_DELLINK},
	} {
		if err := c.change(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		waitWake(t, wakes, c.what)
		deadline := time.After(5 * time.Second)
	next:
		for {
			select {
			case u := <-updates:
				if u.Header.Type != c.typ {
					continue
				}
				if a := u.Attrs(); a.Index != ext.Attrs().Index || a.MTU != 1400 || u.Index != int32(a.Index) {
					t.Errorf("%s: update of index %d (header %d), MTU %d; want index %d, MTU 1400", c.what, a.Index, u.Index, a.MTU, ext.Attrs().Index)
				}
				break next
			case <-deadline:
				t.Fatalf("%s: woken, but no update of type %d within 5s", c.what, c.typ)
			}
		}
	}
}
