package udp

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// TestPeerSubnetHoldsOurAddress: this host was renumbered (its public IP
// 198.18.0.9 became 198.18.0.1) and restarted, and leased 10.244.1.0/24
// anew; its old lease, 10.244.5.0/24 at 198.18.0.9 with its own host
// identity, lives on until its TTL runs out, and cni0 still holds that
// subnet's gateway 10.244.5.1/24. The old lease is skipped, as vxlan and
// host-gw skip it (backend.Segment.LocalIn: its subnet holds an address of
// this host), logged once with the reason and reported; so is a peer whose
// subnet is the peer network of a point-to-point address here. Once cni0
// moves to the new gateway, the lease is judged as any other. Before, the
// udp backend gave this host's own old lease a forwarding entry to its dead
// public IP, and accepted datagrams from that address for the subnet.
func TestPeerSubnetHoldsOurAddress(t *testing.T) {
	h := newTestNet(t)
	nl := h.host.Handle
	cni0 := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	if err := nl.LinkAdd(cni0); err != nil {
		t.Fatal(err)
	}
	gw := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.5.1/24"))}
	ptp := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("192.168.6.1/32")), Peer: backend.IPNet(netip.MustParsePrefix("10.244.6.0/24"))}
	for _, a := range []*netlink.Addr{gw, ptp} {
		if err := nl.AddrAdd(cni0, a); err != nil {
			t.Fatal(err)
		}
	}
	if err := nl.LinkSetUp(cni0); err != nil {
		t.Fatal(err)
	}
	h.start()
	h.own.Attrs.HostID = "3f1c0de2a4b84a56"
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	old := lease("10.244.5.0/24", "198.18.0.9", Type)
	old.Attrs.HostID = h.own.Attrs.HostID
	p6 := lease("10.244.6.0/24", "198.18.0.6", Type)
	two := entry{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")}
	five := entry{netip.MustParsePrefix("10.244.5.0/24"), netip.MustParseAddrPort("198.18.0.9:8285")}
	six := entry{netip.MustParsePrefix("10.244.6.0/24"), netip.MustParseAddrPort("198.18.0.6:8285")}
	skipped := []backend.SkippedLease{
		{Key: old.Key(), Reason: "subnet 10.244.5.0/24 holds 10.244.5.1, an address of this host (cni0)"},
		{Key: p6.Key(), Reason: "subnet 10.244.6.0/24 is the peer network of 192.168.6.1, a point-to-point address of this host (cni0)"},
	}
	for pass := 1; pass <= 2; pass++ {
		res := h.reconcile(p2, old, p6)
		if !slices.Equal(res.SkippedLeases, skipped) {
			t.Errorf("pass %d: result %v, skipped %v; want %v", pass, res, res.SkippedLeases, skipped)
		}
		if pass == 2 && res.Changed() {
			t.Errorf("a second Reconcile changed %v", res)
		}
	}
	if got := h.b.tbl.Load().entries; !slices.Equal(got, []entry{two}) {
		t.Errorf("forwarding table %v, want %v", got, []entry{two})
	}
	for _, s := range skipped {
		if n := h.countLogs(fmt.Sprintf(`"lease"=%q "reason"=%q`, s.Key, s.Reason)); n != 1 {
			t.Errorf("the skip of %s logged %d times, want once", s.Key, n)
		}
	}

	// The first new pod moves cni0 to our gateway; the point-to-point
	// address goes too: both leases are judged as any other.
	for _, a := range []*netlink.Addr{gw, ptp} {
		if err := nl.AddrDel(cni0, a); err != nil {
			t.Fatal(err)
		}
	}
	if res := h.reconcile(p2, old, p6); res.Skipped != 0 {
		t.Errorf("with cni0's old addresses gone: result %v, skipped %v; want none", res, res.SkippedLeases)
	}
	if got, want := h.b.tbl.Load().entries, []entry{two, five, six}; !slices.Equal(got, want) {
		t.Errorf("with cni0's old addresses gone: forwarding table %v, want %v", got, want)
	}
}
