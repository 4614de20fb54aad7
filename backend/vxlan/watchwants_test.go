package vxlan

import (
	"net"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestWatchJudgesByLastPass: Watch judges a neighbour or FDB event by the
// wants of the last pass, not the first: the entries of a peer that joined
// after the first pass, and the FDB entry of a peer whose VtepMAC changed,
// wake it when they are deleted, so they are put back within milliseconds
// rather than at the next resync. A pass that wants the same entries as the
// last keeps the last one's map (wantMap); one that wants others must make
// a new one.
func TestWatchJudgesByLastPass(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	p2moved := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:22")
	for _, tc := range []struct {
		name   string
		passes [][]subnet.Lease
		del    *netlink.Neigh
	}{
		{"neighbour of a peer that joined", [][]subnet.Lease{{p2}, {p2}, {p2, p3}},
			&netlink.Neigh{Family: unix.AF_INET, IP: net.IPv4(10, 244, 3, 0)}},
		{"FDB entry of a peer that joined", [][]subnet.Lease{{p2}, {p2}, {p2, p3}},
			&netlink.Neigh{Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 3}, IP: net.IPv4(198, 18, 0, 3)}},
		{"FDB entry of a peer's new VtepMAC", [][]subnet.Lease{{p2, p3}, {p2moved, p3}},
			&netlink.Neigh{Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, 0x22}, IP: net.IPv4(198, 18, 0, 2)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			for _, peers := range tc.passes {
				h.reconcile(peers...)
			}
			// Opened after the passes: no event of their writes
			// arrives in it.
			wakes, stop := h.watch(t)
			defer stop()
			tc.del.LinkIndex = h.link("flannel.1").Attrs().Index
			if err := h.ns.Handle.NeighDel(tc.del); err != nil {
				t.Fatal(err)
			}
			select {
			case <-wakes:
			case <-time.After(5 * time.Second):
				t.Fatalf("no wake within 5s after the %s was deleted", tc.name)
			}
		})
	}
}
