package vxlan

import (
	"context"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestCheckHostClash: CheckHost, which the agent's config watch asks of a
// new config in the agent's network namespace, tells, reading only, that a start would stop because another
// device holds the VNI and UDP port and differs from ours in what only
// recreating ours changes, in Prepare's words. A holder that differs in its
// MAC alone is not guessed at: a start renames it back when the state
// dir's VTEP MAC is its, and the check does not settle that MAC. A device
// with the VNI on another port, our own device, or none, is no clash.
// Before, the watch asked nothing of the devices, and such a config was
// "restart agentd to apply it".
func TestCheckHostClash(t *testing.T) {
	holder := func(mac byte, port int, learning bool) func(ext int) *netlink.Vxlan {
		return func(ext int) *netlink.Vxlan {
			return &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-other", HardwareAddr: net.HardwareAddr{2, 0, 0, 0, 0, mac}},
				VxlanId: 1, Port: port, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext, Learning: learning}
		}
	}
	for _, tc := range []struct {
		name    string
		holder  func(ext int) *netlink.Vxlan // nil: none
		ours    bool                         // our device is there, prepared
		refused bool                         // CheckHost says Prepare's error
	}{
		{"no other device", nil, false, false},
		{"our device", nil, true, false},
		{"another program's, learning on", holder(0x99, 8472, true), false, true},
		{"another MAC alone", holder(0x99, 8472, false), false, false},
		{"the VNI on another port", holder(0x99, 4789, true), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
			if tc.holder != nil {
				if err := h.ns.Handle.LinkAdd(tc.holder(h.ext.Attrs().Index)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.ours {
				h.b = h.newBackend()
				h.prepare()
			}
			before := h.ns.State(t)
			var got error
			if err := h.ns.Do(func() error {
				got = CheckHost(h.cfg.Network.Backend, h.cfg.External, h.ext.Attrs().MTU)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if after := h.ns.State(t); after != before {
				t.Errorf("CheckHost changed the kernel state:\n%s", lineDiff(after, before))
			}
			if !tc.refused {
				if got != nil {
					t.Errorf("CheckHost: %v, want nil", got)
				}
				return
			}
			h.b = h.newBackend()
			_, err := h.b.Prepare(context.Background())
			if err == nil {
				t.Fatal("Prepare succeeded beside the holder")
			}
			if got == nil || got.Error() != err.Error() {
				t.Errorf("CheckHost: %v\nwant Prepare's: %v", got, err)
			}
		})
	}
}
