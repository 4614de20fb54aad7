package backend_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// TestWatchEventsNeighsAsNetlink: neighbour and FDB events, read by
// agentd's own subscription with parseNeighEntry (neighEvents), are those
// netlink's NeighSubscribe hands over for the same kernel messages, side
// by side, in every field neighEvents sets (neighUpdate): IPv4 neighbours
// permanent, reachable, stale, noarp, proxy (no address),
// externally learned, on a veth and on a vxlan device, replaced and
// deleted; IPv6 ones; a vxlan device's FDB entries (the all-zeros MAC's
// with several destinations, a unicast MAC's, with another VNI, VNI 0,
// a port and an underlay device); a bridge's, the kernel's own for a port
// and one added; and the deletes of all. VNIZero is set for the entry with
// VNI 0 alone.
func TestWatchEventsNeighsAsNetlink(t *testing.T) {
	ns, _ := ipv6Ext(t)
	ip := ns.Cmd(t, "ip", "add neighbours with")
	bridge := ns.Cmd(t, "bridge", "add FDB entries with")
	ip("link", "add", "flannel.1", "type", "vxlan", "id", "1", "local", "198.18.0.1", "dev", "ext0", "dstport", "8472", "nolearning")
	ip("link", "add", "br0", "type", "bridge")
	ip("link", "set", "flannel.1", "up")
	ip("link", "set", "br0", "up")

	// Each side takes the events from the first marker's on: the kernel
	// may send some of its own (IPv6 neighbour discovery) before both
	// are subscribed.
	const first, last = "10.244.250.1", "10.244.251.1"
	var ours shownEvents
	var vniZero []string // under ours.mu
	unheldWatch(t, ns, backend.EventFilter{
		Neigh: func(u backend.NeighEvent) bool {
			ours.mu.Lock()
			defer ours.mu.Unlock()
			if len(ours.events) == 0 && u.IP.String() != first {
				return false
			}
			ours.events = append(ours.events, neighUpdate(u.NeighUpdate))
			if u.VNIZero {
				vniZero = append(vniZero, neighUpdate(u.NeighUpdate))
			}
			return false
		},
	})
	theirs := netlinkEvents(t, 256, func(ch chan<- netlink.NeighUpdate, done <-chan struct{}) error {
		return netlink.NeighSubscribeWithOptions(ch, done, netlink.NeighSubscribeOptions{Namespace: &ns.NsHandle})
	})
	ip("neigh", "add", first, "lladdr", "02:00:00:00:fa:01", "dev", "ext0", "nud", "permanent")
	var want []string
	for deadline := time.After(5 * time.Second); len(want) == 0; {
		select {
		case u := <-theirs:
			if u.IP.String() == first {
				want = append(want, neighUpdate(u))
			}
		case <-deadline:
			t.Fatal("after 5s, netlink's subscription handed over no event of the first neighbour")
		}
	}

	neighs := [][]string{
		{"10.244.1.0", "lladdr", "3e:1b:7c:00:00:01", "dev", "ext0", "nud", "permanent"},
		{"10.244.2.0", "lladdr", "3e:1b:7c:00:00:02", "dev", "ext0", "nud", "reachable"},
		{"10.244.3.0", "lladdr", "3e:1b:7c:00:00:03", "dev", "ext0", "nud", "stale"},
		{"10.244.4.0", "lladdr", "3e:1b:7c:00:00:04", "dev", "ext0", "nud", "noarp"},
		{"10.244.5.0", "lladdr", "3e:1b:7c:00:00:05", "dev", "ext0", "nud", "permanent", "extern_learn"},
		{"10.244.6.0", "lladdr", "3e:1b:7c:00:00:06", "dev", "flannel.1", "nud", "permanent"},
		{"2001:db8::2", "lladdr", "3e:1b:7c:00:00:07", "dev", "ext0", "nud", "permanent"},
		{"proxy", "10.244.7.1", "dev", "ext0"},
	}
	for _, n := range neighs {
		ip(append([]string{"neigh", "add"}, n...)...)
	}
	ip("neigh", "replace", "10.244.1.0", "lladdr", "3e:1b:7c:00:01:01", "dev", "ext0", "nud", "reachable")
	ip("neigh", "change", "10.244.2.0", "lladdr", "3e:1b:7c:00:00:02", "dev", "ext0", "nud", "permanent")
	fdbs := [][]string{
		{"00:00:00:00:00:00", "dst", "198.18.0.2", "dev", "flannel.1"},
		{"00:00:00:00:00:00", "dst", "198.18.0.3", "dev", "flannel.1"},
		{"3e:1b:7c:00:00:11", "dst", "198.18.0.4", "dev", "flannel.1", "self", "permanent"},
		{"3e:1b:7c:00:00:12", "dst", "198.18.0.5", "dev", "flannel.1", "self", "permanent", "vni", "7", "port", "4789", "via", "ext0"},
		{"02:00:00:00:00:21", "dev", "peer0", "master", "static"},
	}
	ip("link", "set", "peer0", "master", "br0")
	for _, f := range fdbs {
		bridge(append([]string{"fdb", "append"}, f...)...)
	}
	bridge("fdb", "replace", "3e:1b:7c:00:00:11", "dst", "198.18.0.4", "dev", "flannel.1", "self", "permanent", "vni", "0")
	bridge("fdb", "replace", "3e:1b:7c:00:00:11", "dst", "198.18.0.6", "dev", "flannel.1", "self", "permanent")
	for _, f := range fdbs {
		bridge(append([]string{"fdb", "del"}, f...)...)
	}
	ip("link", "set", "peer0", "nomaster")
	for _, n := range neighs {
		// The address (after "proxy"), and the device.
		at, dev := slices.Index(n, "lladdr"), slices.Index(n, "dev")
		if at < 0 {
			at = dev
		}
		ip(append(append([]string{"neigh", "del"}, n[:at]...), n[dev:dev+2]...)...)
	}
	ip("neigh", "add", last, "lladdr", "02:00:00:00:fb:01", "dev", "ext0", "nud", "permanent")
	want = sameAsNetlink(t, "neighbour", "NeighSubscribe", theirs, want, neighUpdate, func(u string) bool {
		return strings.Contains(u, " ip="+last+" ")
	}, &ours)
	if len(want) < 2*(len(neighs)+len(fdbs))+6 {
		t.Fatalf("only %d events:\n%s", len(want), strings.Join(want, "\n"))
	}
	ours.mu.Lock()
	defer ours.mu.Unlock()
	if len(vniZero) != 1 || !strings.Contains(vniZero[0], "mac=3e:1b:7c:00:00:11") || !strings.Contains(vniZero[0], " vni=0") {
		t.Errorf("events with VNIZero:\n%s\nwant the one of 3e:1b:7c:00:00:11 given VNI 0", strings.Join(vniZero, "\n"))
	}
}

// neighUpdate is u in the fields neighEvents sets.
func neighUpdate(u netlink.NeighUpdate) string {
	n := u.Neigh
	return fmt.Sprintf("type=%d dev#%d family=%d state=%#x ntype=%d flags=%#x ip=%v mac=%v vni=%d",
		u.Type, n.LinkIndex, n.Family, n.State, n.Type, n.Flags, n.IP, n.HardwareAddr, n.VNI)
}
