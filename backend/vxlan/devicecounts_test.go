package vxlan

import (
	"fmt"
	"net"
	"strconv"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// TestDeviceReplacedWhileRunning: flannel.1 deleted and made again by
// another program while the agent runs, with our MAC and all else ours but
// one thing only recreating it changes (learning on, as flanneld makes it
// with "Learning":true; another VNI, port, local address or underlay
// device; GBP; flow-based), is deleted and recreated by the next pass,
// which counts the device removed and added, puts back the address and the
// peer's entries, and logs why, once. The pass after it changes nothing.
// (TestIncompatibleDevice's devices have no underlay device, which alone
// makes each of them incompatible.)
func TestDeviceReplacedWhileRunning(t *testing.T) {
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	for _, tc := range []struct {
		name   string
		change func(vx *netlink.Vxlan, peer0 int)
		reason string
	}{
		{"learning", func(vx *netlink.Vxlan, _ int) { vx.Learning = true }, "learning is on"},
		{"VNI", func(vx *netlink.Vxlan, _ int) { vx.VxlanId = 2 }, "VNI 2, want 1"},
		{"port", func(vx *netlink.Vxlan, _ int) { vx.Port = 4789 }, "UDP port 4789, want 8472"},
		{"local", func(vx *netlink.Vxlan, _ int) { vx.SrcAddr = net.IPv4(198, 18, 0, 9) }, "local address 198.18.0.9, want 198.18.0.1"},
		{"underlay", func(vx *netlink.Vxlan, peer0 int) { vx.VtepDevIndex = peer0 }, "underlay device index %d, want %d (ext0)"},
		{"GBP", func(vx *netlink.Vxlan, _ int) { vx.GBP = true }, "group policy (GBP) is on"},
		{"flow-based", nil, "it is flow-based (external)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`)
			nl := h.ns.Handle
			h.reconcile(p2)
			if err := nl.LinkDel(h.link("flannel.1")); err != nil {
				t.Fatal(err)
			}
			ext, peer0 := h.ext.Attrs().Index, h.link("peer0").Attrs().Index
			other := &netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "flannel.1", HardwareAddr: h.b.mac.HardwareAddr()},
				VxlanId: 1, Port: 8472, SrcAddr: net.IPv4(198, 18, 0, 1), VtepDevIndex: ext}
			if tc.change != nil {
				tc.change(other, peer0)
				if err := nl.LinkAdd(other); err != nil {
					t.Fatal(err)
				}
			} else {
				addFlowBased(h)
			}
			if err := nl.LinkSetUp(h.link("flannel.1")); err != nil {
				t.Fatal(err)
			}
			res := h.reconcile(p2)
			// The device removed and added, the address and p2's FDB
			// entry, neighbour and route added.
			if want := (backend.Result{Added: 5, Removed: 1}); res.String() != want.String() || res.ByKind["device"] != 2 {
				t.Errorf("pass after the device was replaced: %v, %v; want %v, device 2", res, res.ByKind, want)
			}
			h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))
			reason := tc.reason
			if tc.name == "underlay" {
				reason = fmt.Sprintf(reason, peer0, ext)
			}
			why := `"msg"="deleting an incompatible vxlan device to recreate it" "device"="flannel.1" "reason"=` + strconv.Quote(reason)
			if n := h.countLogs(why); n != 1 {
				t.Errorf("%d lines with %s, want 1; logs:\n%s", n, why, h.logText())
			}
			if res := h.reconcile(p2); res.Changed() {
				t.Errorf("the pass after: %v, want nothing changed", res)
			}
		})
	}
}

// TestPrepareCorrectsDeviceMTU: an agent starting on a device of ours whose
// MTU is not the one it wants (set by hand, `ip link set flannel.1 mtu
// 1400`) sets it and starts: subnet.env will say what the device has.
func TestPrepareCorrectsDeviceMTU(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.reconcile()
	if err := h.ns.Handle.LinkSetMTU(h.link("flannel.1"), 1400); err != nil {
		t.Fatal(err)
	}
	h.b = h.newBackend() // a restart
	h.prepare()
	if h.b.MTU() != 1450 {
		t.Errorf("MTU() = %d, want 1450", h.b.MTU())
	}
	h.check(base)
	const corrected = `"msg"="corrected the vxlan device's MTU" "device"="flannel.1" "was"=1400 "mtu"=1450`
	if n := h.countLogs(corrected); n != 1 {
		t.Errorf("%d lines with %s, want 1; logs:\n%s", n, corrected, h.logText())
	}
}

// addFlowBased adds flannel.1 as ours but flow-based (external), with VNI
// 1, by a netlink request made by hand: ip and netlink.Vxlan make a
// flow-based device only with VNI 0 (as addVxlan).
func addFlowBased(h *host) {
	h.t.Helper()
	h.addVxlanLink("flannel.1", h.b.mac.HardwareAddr(), func(data *nl.RtAttr) {
		data.AddRtAttr(unix.IFLA_VXLAN_LOCAL, net.IPv4(198, 18, 0, 1).To4())
		data.AddRtAttr(unix.IFLA_VXLAN_LINK, nl.Uint32Attr(uint32(h.ext.Attrs().Index)))
		data.AddRtAttr(unix.IFLA_VXLAN_COLLECT_METADATA, nl.Uint8Attr(1))
	}, "a flow-based flannel.1")
}
