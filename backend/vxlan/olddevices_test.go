package vxlan

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestOldDevicesVNI0: an explicit "VNI":0 runs flannel.0 (as in flanneld),
// and flannel.0 is then a device of a VNI like any other: deleted by the
// vxlan backend of another VNI and by RemoveLeftovers once the network runs
// another backend, by the same rules (the state dir's vxlan-0.mac, or that
// lost, the shape only flanneld and agentd give it), and never while it is
// the running one. Before, flannel.0 was never looked at, so it stayed
// after the network left VNI 0, its address making a peer that later
// leases our old subnet be skipped; and with VNI 0 running, an old
// flannel.<N> deleted was logged as "the network runs another backend now".
func TestOldDevicesVNI0(t *testing.T) {
	vni0, vni1 := `{"Type":"vxlan","VNI":0}`, `{"Type":"vxlan"}`
	for _, tc := range []struct {
		name         string
		stateDirLost bool
	}{
		{"state dir kept", false},
		{"state dir lost", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, vni0)
			peer := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "")
			peer.Attrs.BackendData = json.RawMessage(`{"VNI":0,"VtepMAC":"02:00:00:00:00:02"}`)
			if res := h.reconcile(peer); res.Skipped != 0 {
				t.Fatalf("result %v: the VNI 0 peer was skipped:\n%s", res, h.logText())
			}
			own := h.link("flannel.0").Attrs().Index
			// A restart with VNI 0 keeps the device.
			h.b = h.newBackend()
			h.prepare()
			if got := h.link("flannel.0").Attrs().Index; got != own {
				t.Fatalf("a restart with VNI 0 replaced flannel.0 (#%d, now #%d):\n%s", own, got, h.logText())
			}

			// Each step restarts the agent with the network's new config;
			// gone is the device it must delete, with the log line saying so.
			for _, step := range []struct {
				backend, gone, keep, logged string
			}{
				{vni1, "flannel.0", "flannel.1", `"deleted our vxlan device of a VNI the network used before" "device"="flannel.0" "vni"=0`},
				{vni0, "flannel.1", "flannel.0", `"deleted our vxlan device of a VNI the network used before" "device"="flannel.1" "vni"=1`},
				{"host-gw", "flannel.0", "", `"deleted our vxlan device: the network runs another backend now" "device"="flannel.0" "vni"=0`},
			} {
				if tc.stateDirLost {
					h.cfg.StateDir = t.TempDir()
				}
				if step.backend == "host-gw" {
					h.cfg.Network.BackendType, h.cfg.Network.Backend = "host-gw", json.RawMessage(`{"Type":"host-gw"}`)
					removeLeftovers(h.ns.Handle, h.cfg)
				} else {
					h.cfg.Network.Backend = json.RawMessage(step.backend)
					h.b = h.newBackend()
					h.prepare()
					h.reconcile()
				}
				if _, err := h.ns.Handle.LinkByName(step.gone); err == nil {
					t.Errorf("after the change to %s, %s is left", step.backend, step.gone)
				}
				if step.keep != "" {
					h.link(step.keep)
				}
				why := `"why"="the state dir's vxlan-`
				if tc.stateDirLost {
					why = `"why"="no state file shows it`
				}
				if n := h.countLogs(step.logged + " " + why); n != 1 {
					t.Errorf("after the change to %s: logged %d times %s %s, want once:\n%s", step.backend, n, step.logged, why, h.logText())
				}
			}
			if n := h.countLogs("another backend now"); n != 1 {
				t.Errorf("logged %d times that the network runs another backend, want once (for host-gw):\n%s", n, h.logText())
			}
			if !tc.stateDirLost {
				// The state files stay, so a return to a VNI brings its MAC back.
				for _, f := range []string{"vxlan-0.mac", "vxlan-1.mac"} {
					if b, err := os.ReadFile(filepath.Join(h.cfg.StateDir, f)); err != nil || strings.TrimSpace(string(b)) == "" {
						t.Errorf("%s: %q, %v", f, b, err)
					}
				}
			}
		})
	}
}

// TestOldDeviceWithoutAddressDeleted: the vxlan device is made at Prepare,
// and gets its address <subnet>.0/32 only once a lease is held. An agent
// that took another config while it waited for its first lease (2238ca3),
// or was stopped then and restarted on another, left that device behind:
// with no address it did not pass ServesOnlyCluster ("it has 0 addresses
// [], not one"), so the next VNI's backend and RemoveLeftovers logged
// "leaving alone a device named like a flannel vxlan device … delete it"
// about a device the state dir proves agentd's own. It is deleted now.
func TestOldDeviceWithoutAddressDeleted(t *testing.T) {
	for _, next := range []string{`{"Type":"vxlan","VNI":2}`, "host-gw"} {
		t.Run(next, func(t *testing.T) {
			h := newHost(t, `{"Type":"vxlan"}`) // prepared; no lease, so no address
			if next == "host-gw" {
				h.cfg.Network.BackendType, h.cfg.Network.Backend = "host-gw", json.RawMessage(`{"Type":"host-gw"}`)
				removeLeftovers(h.ns.Handle, h.cfg)
			} else {
				h.cfg.Network.Backend = json.RawMessage(next)
				h.b = h.newBackend()
				h.prepare()
				h.link("flannel.2")
			}
			if _, err := h.ns.Handle.LinkByName("flannel.1"); err == nil {
				t.Fatalf("after the change to %s, flannel.1 (made before any lease) is left:\n%s", next, h.logText())
			}
			if n := h.countLogs(`"device"="flannel.1" "vni"=1 "why"="the state dir's vxlan-1.mac`); n != 1 {
				t.Errorf("logged the deletion %d times, want once:\n%s", n, h.logText())
			}
			if n := h.countLogs("no address (made before a lease gave it one)"); n != 1 {
				t.Errorf("the deletion's reason does not say the device had no address yet:\n%s", h.logText())
			}
		})
	}
}
