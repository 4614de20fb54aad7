package udp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// TestUnusablePublicIPs: a udp peer whose public IP can be no other host's
// is skipped, logged once with the reason and reported in the Result (the
// agent's /status peersSkipped), as vxlan's and host-gw's are: another
// address of this host, on the external interface or any other link, and
// the network or broadcast address of the external interface's subnet.
// A packet for its subnet is then answered with a net unreachable, as for a
// subnet no peer holds. Before, such a peer had a forwarding entry: the
// datagrams for its subnet went to this host's own address, where no
// socket of ours listens, or out to the network address, which no host
// answered, counted sent; those to the broadcast address were refused by
// the kernel (EACCES), one send error each.
func TestUnusablePublicIPs(t *testing.T) {
	h := newTestHost(t, func(h *testHost) {
		h.host.AddVeth(t, "data0", "data1", netip.MustParsePrefix("198.19.0.4/32"))
		ext, err := h.host.Handle.LinkByName("ext0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.host.Handle.AddrAdd(ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.50/24"))}); err != nil {
			t.Fatal(err)
		}
	})
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	two := fmt.Sprint([]entry{{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")}})
	for i, tc := range []struct{ pub, reason string }{
		{"198.18.0.50", "public IP 198.18.0.50 is an address of this host (ext0)"},
		{"198.19.0.4", "public IP 198.19.0.4 is an address of this host (data0)"},
		{"198.18.0.0", "public IP 198.18.0.0 is the network address of 198.18.0.0/24"},
		{"198.18.0.255", "public IP 198.18.0.255 is the broadcast address of 198.18.0.0/24"},
	} {
		sn := fmt.Sprintf("10.244.%d.0/24", 10+i)
		l := lease(sn, tc.pub, Type)
		t.Run(tc.pub, func(t *testing.T) {
			for pass := 1; pass <= 2; pass++ {
				res := h.reconcile(p2, l)
				want := []backend.SkippedLease{{Key: l.Key(), Reason: tc.reason}}
				if res.Skipped != 1 || !slices.Equal(res.SkippedLeases, want) {
					t.Errorf("pass %d: result %v, skipped %v; want %v", pass, res, res.SkippedLeases, want)
				}
				if pass == 2 && res.Changed() {
					t.Errorf("a second Reconcile changed %v", res)
				}
			}
			if got := fmt.Sprint(h.b.tbl.Load().entries); got != two {
				t.Errorf("forwarding table %s, want %s", got, two)
			}
			if n := h.countLogs(fmt.Sprintf(`"lease"=%q "reason"=%q`, l.Key(), tc.reason)); n != 1 {
				t.Errorf("the skip logged %d times, want once", n)
			}
			before := h.b.Stats()
			expectNetUnreachable(t, h, netip.AddrPortFrom(netip.MustParsePrefix(sn).Addr().Next().Next(), 9))
			nstest.Await(t, 3*time.Second, "the packet counted as noRoute", func() error {
				if n := h.b.Stats().Dropped["noRoute"] - before.Dropped["noRoute"]; n != 1 {
					return fmt.Errorf("%d noRoute drops", n)
				}
				return nil
			})
			if s := h.b.Stats(); s.Sent != before.Sent || s.SendErrors != before.SendErrors {
				t.Errorf("a packet for %s: %d datagrams sent, %d send errors; want none", sn, s.Sent-before.Sent, s.SendErrors-before.SendErrors)
			}
		})
	}
}

// countLogs counts the log entries holding substr.
func (h *testHost) countLogs(substr string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.logs {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

// logText is everything logged, one entry a line.
func (h *testHost) logText() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return strings.Join(h.logs, "\n")
}

// promptly is how soon a pass that Watch woke must have changed the
// forwarding table (shared/DESIGN.md §4.1: repairs within 1 s), not at the
// next resync.
const promptly = time.Second

// TestAddressChangeRejudgesPeers: a peer skipped because its public IP is
// an address of this host (TestUnusablePublicIPs), or its subnet holds one
// (TestPeerSubnetHoldsOurAddress), is judged again as soon
// as that address changes on any link, not at the next resync: passes run
// here only when Watch wakes, as the agent's loop runs them with an endless
// --resync-interval. Nothing else wakes it: the links are not the external
// interface, and their addresses make no route of ours or in the cluster
// network. The address gone, the peer gets its entry within a second;
// come, its entry goes within a second. Before, the peer waited for the
// resync.
func TestAddressChangeRejudgesPeers(t *testing.T) {
	two := entry{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")}
	four := entry{netip.MustParsePrefix("10.244.4.0/24"), netip.MustParseAddrPort("198.19.0.4:8285")}
	for _, tc := range []struct {
		name, link, addr string
		held             bool // at the start; the test adds it if not, else deletes it
	}{
		{"a peer's public IP no longer ours", "data0", "198.19.0.4/32", true},
		{"a peer's public IP made ours", "data0", "198.19.0.4/32", false},
		{"docker0 (down) no longer holding a peer's public IP", "docker0", "198.19.0.4/24", true},
		{"docker0 (down) given a peer's public IP", "docker0", "198.19.0.4/24", false},
		{"docker0 (down) no longer holding an address in a peer's subnet", "docker0", "10.244.4.1/24", true},
		{"docker0 (down) given an address in a peer's subnet", "docker0", "10.244.4.1/24", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			nl := h.host.Handle
			if err := nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0"}}); err != nil {
				t.Fatal(err)
			}
			h.host.AddVeth(t, "data0", "data1", netip.Prefix{})
			link, err := nl.LinkByName(tc.link)
			if err != nil {
				t.Fatal(err)
			}
			a := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix(tc.addr))}
			if tc.held {
				if err := nl.AddrAdd(link, a); err != nil {
					t.Fatal(err)
				}
			}
			peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.4.0/24", "198.19.0.4", Type)}
			// The first pass before Watch: the events of its writes (the
			// device's address and route) would wake a second pass, which
			// might find the change below on its own.
			h.prepare()
			h.reconcile(peers...)
			wakes, _ := nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
			nstest.RunPasses(t, wakes, func() error {
				_, err := h.b.Reconcile(context.Background(), h.own, peers)
				return err
			})
			before, after := []entry{two, four}, []entry{two}
			if tc.held {
				before, after = after, before
			}
			entries := func(want []entry) func() error {
				return func() error {
					if got := h.b.tbl.Load().entries; !slices.Equal(got, want) {
						return fmt.Errorf("forwarding table %v, want %v", got, want)
					}
					return nil
				}
			}
			if err := entries(before)(); err != nil {
				t.Fatalf("before the change: %v", err)
			}
			start := time.Now()
			change := nl.AddrAdd
			if tc.held {
				change = nl.AddrDel
			}
			if err := change(link, a); err != nil {
				t.Fatal(err)
			}
			nstest.Await(t, promptly, tc.name, entries(after))
			t.Logf("the forwarding table followed in %v", time.Since(start).Round(time.Millisecond))
		})
	}
}

// TestAddressEventsJudged: of the address events of links other than the
// external interface and flannel0, only those about a peer's public IP, or
// an address in a peer's subnet (TestAddressChangeRejudgesPeers), wake
// Watch: not those of our own subnet, of other networks, nor IPv6 ones (the
// kernel's link-local addresses coming and going with a link). Else each
// would cost a pass. The marker, a peer's public IP, wakes it; the events
// before it on the same socket have been judged once it is logged.
func TestAddressEventsJudged(t *testing.T) {
	h := newTestNet(t)
	nl := h.host.Handle
	data := h.host.AddVeth(t, "data0", "data1", netip.Prefix{})
	h.prepare()
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.19.0.3", Type))
	nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
	h.host.ChurnAddresses(t, data, "10.244.1.1/24", "198.18.1.1/24", "198.19.0.4/32", "fd00::1/64")
	if err := nl.AddrAdd(data, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.0.3/32"))}); err != nil {
		t.Fatal(err)
	}
	nstest.AwaitLogged(t, h.countLogs, `"IP"="198.19.0.3"`, h.logText)
	const woke = `"msg"="kernel event about our objects" "kind"="address"`
	if n := h.countLogs(woke); n != 1 {
		t.Errorf("%d address events woke Watch, want 1 (the marker's); logs:\n%s", n, h.logText())
	}
}
