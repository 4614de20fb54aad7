package vxlan

import (
	"encoding/json"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestOldDeviceInUseIsLeft: flannel.1, which the state dir's vxlan-1.mac
// shows is ours, is deleted when the network no longer uses it (VNI 2 now,
// or another backend) only while it serves nothing but the cluster
// network. With a vxlan device on top of it, which the kernel would delete
// along with it, it stays, and so does that device, logged with why and
// the command that deletes it. Before, the state file alone was enough
// after a VNI change: flannel.1 was deleted and vx-over with it.
func TestOldDeviceInUseIsLeft(t *testing.T) {
	for _, tc := range []struct {
		name  string
		onTop bool
		run   func(h *host) // what starts with the network's new config
		gone  bool
	}{
		{"VNI changed, a link on top", true, func(h *host) {
			h.cfg.Network.Backend = json.RawMessage(`{"Type":"vxlan","VNI":2}`)
			h.b = h.newBackend()
			h.prepare()
		}, false},
		{"switched to host-gw, a link on top", true, func(h *host) {
			h.cfg.Network.BackendType, h.cfg.Network.Backend = "host-gw", json.RawMessage(`{"Type":"host-gw"}`)
			removeLeftovers(h.ns.Handle, h.cfg)
		}, false},
		{"switched to host-gw", false, func(h *host) {
			h.cfg.Network.BackendType, h.cfg.Network.Backend = "host-gw", json.RawMessage(`{"Type":"host-gw"}`)
			removeLeftovers(h.ns.Handle, h.cfg)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			h.reconcile(lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02"))
			if tc.onTop {
				if err := h.ns.Handle.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "vx-over"}, VxlanId: 7, Port: 4789,
					VtepDevIndex: h.link("flannel.1").Attrs().Index}); err != nil {
					t.Fatal(err)
				}
			}
			tc.run(h)
			if _, err := h.ns.Handle.LinkByName("flannel.1"); (err != nil) != tc.gone {
				t.Errorf("flannel.1 deleted: %v, want %v\n%s", err != nil, tc.gone, h.logText())
			}
			if tc.onTop {
				if _, err := h.ns.Handle.LinkByName("vx-over"); err != nil {
					t.Errorf("vx-over, on top of flannel.1: %v", err)
				}
				if n := h.countLogs(`"why"="link vx-over is on top of it" "command"="ip link del flannel.1"`); n != 1 {
					t.Errorf("logged %d times that flannel.1 is left for vx-over, with the command, want once:\n%s", n, h.logText())
				}
			} else if n := h.countLogs(`"deleted our vxlan device: the network runs another backend now" "device"="flannel.1" "vni"=1 "why"="the state dir's vxlan-1.mac`); n != 1 {
				t.Errorf("logged the deletion of flannel.1 %d times, want once, saying why:\n%s", n, h.logText())
			}
		})
	}
}
