package backend_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
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
	wakes := unheldWatch(t, ns, backend.EventFilter{
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

// TestWatchEventsAddrsAsNetlink: address events, read by agentd's own
// subscription (addrEvents), are those netlink's AddrSubscribe hands over
// for the same kernel messages, side by side: IPv4 addresses with a label,
// lifetimes or a peer, IPv6 ones with and without a peer, the kernel's own
// (an IPv6 link-local address), added and deleted.
func TestWatchEventsAddrsAsNetlink(t *testing.T) {
	ns, ext := ipv6Ext(t)
	var ours shownEvents
	unheldWatch(t, ns, backend.EventFilter{
		Addr: func(u netlink.AddrUpdate) bool {
			ours.add(addrUpdate(u))
			return false
		},
	})
	theirs := netlinkEvents(t, 64, func(ch chan<- netlink.AddrUpdate, done <-chan struct{}) error {
		return netlink.AddrSubscribeWithOptions(ch, done, netlink.AddrSubscribeOptions{Namespace: &ns.NsHandle})
	})
	addrs := []*netlink.Addr{
		{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.1.1/24")), Label: "ext0:a", ValidLft: 100, PreferedLft: 50},
		{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.2.1/32")), Peer: backend.IPNet(netip.MustParsePrefix("198.18.2.2/32"))},
		{IPNet: backend.IPNet(netip.MustParsePrefix("2001:db8::1/64")), Flags: unix.IFA_F_NODAD},
		{IPNet: backend.IPNet(netip.MustParsePrefix("2001:db8:1::1/128")), Peer: backend.IPNet(netip.MustParsePrefix("2001:db8:1::2/128")), Flags: unix.IFA_F_NODAD},
	}
	for _, a := range addrs {
		if err := ns.Handle.AddrAdd(ext, a); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	// The kernel announces an IPv6 address from a work queue, after the
	// add has returned, and not at all once it is deleted: wait until
	// netlink's subscription has handed over each address's arrival.
	var want []string
	for deadline, added := time.After(5*time.Second), 0; added < len(addrs); {
		select {
		case u := <-theirs:
			want = append(want, addrUpdate(u))
			if u.NewAddr && slices.ContainsFunc(addrs, func(a *netlink.Addr) bool { return a.IPNet.String() == u.LinkAddress.String() }) {
				added++
			}
		case <-deadline:
			t.Fatalf("after 5s, netlink's subscription handed over the arrival of %d of the %d addresses:\n%s", added, len(addrs), strings.Join(want, "\n"))
		}
	}
	for _, a := range addrs {
		if err := ns.Handle.AddrDel(ext, a); err != nil {
			t.Fatalf("delete %s: %v", a, err)
		}
	}
	// The last event, after which both have seen all.
	last := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.99.1/32"))}
	if err := ns.Handle.AddrAdd(ext, last); err != nil {
		t.Fatal(err)
	}
	want = sameAsNetlink(t, "address", "AddrSubscribe", theirs, want, addrUpdate, func(u string) bool {
		return strings.HasPrefix(u, "198.18.99.1/32 ")
	}, &ours)
	if len(want) < 2*len(addrs)+1 {
		t.Fatalf("only %d events: %q", len(want), want)
	}
}

func addrUpdate(u netlink.AddrUpdate) string {
	return fmt.Sprintf("%s dev#%d new=%v flags=%#x scope=%d lft=%d/%d", u.LinkAddress.String(), u.LinkIndex, u.NewAddr, u.Flags, u.Scope, u.PreferedLft, u.ValidLft)
}
