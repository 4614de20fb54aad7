package vxlan

import (
	"context"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestDeviceRecreatedOverTinyInterface: with ext0's MTU too small for
// VXLAN at all (100), a device deleted is made again with the MTU the
// kernel gives it, which it refuses to raise: the pass leaves that MTU as
// it is rather than fail, and programs the peer.
func TestDeviceRecreatedOverTinyInterface(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	h.reconcile(p2)
	h.setExtMTU(100)
	h.reconcile(p2)
	if err := h.ns.Handle.LinkDel(h.link("flannel.1")); err != nil {
		t.Fatal(err)
	}
	for pass := 1; pass <= 2; pass++ {
		if _, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2}); err != nil {
			t.Fatalf("pass %d over ext0 at 100 with the device deleted: %v", pass, err)
		}
	}
	got := h.deviceMTU()
	t.Logf("the kernel made the device with MTU %d", got)
	h.check(withMTUs(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")), 100, got))
	if h.b.MTU() != 1450 {
		t.Errorf("MTU() = %d, want 1450 kept", h.b.MTU())
	}
}
