package vxlan

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// TestVNISplit: a peer whose lease names another VNI is not programmed,
// with the reason, and "VNI":0 is VNI 0 like any other: flanneld and agentd
// with "VNI":0 run flannel.0, which drops what a VNI-1 device sends it. So a
// cluster split between VNI 0 and VNI 1 is reported on both sides. Before,
// a lease's 0 was read as "unknown" and programmed on any host: the VNI-1
// hosts sent the VNI-0 ones traffic they dropped, without a word. flanneld
// before late 2023 wrote its VNI modulo 65536, and no flanneld writes a
// Port: on a host with VNI 65536 a lease without a Port saying 0 (such a
// flanneld's) or 65536 (v0.28.10's) is programmed, while agentd's (with a
// Port) says its VNI whole and is judged by it.
func TestVNISplit(t *testing.T) {
	data := func(vni int, port string) string {
		return fmt.Sprintf(`{"VNI":%d,"VtepMAC":"02:00:00:00:00:%%02x"%s}`, vni, port)
	}
	for _, tc := range []struct {
		name, config string
		vni          int
		// peers' BackendData (%02x: the peer's number, also its MAC's
		// last byte), programmed or not
		programmed, skipped []string
	}{
		{"VNI 1", `{"Type":"vxlan"}`, 1,
			[]string{data(1, ""), data(1, `,"Port":8472`)},
			[]string{data(0, ""), data(0, `,"Port":8472`), data(2, ""), data(65537, `,"Port":8472`), `{"VtepMAC":"02:00:00:00:00:%02x"}`}},
		{"VNI 0", `{"Type":"vxlan","VNI":0}`, 0,
			[]string{data(0, ""), data(0, `,"Port":8472`)},
			[]string{data(1, ""), data(1, `,"Port":8472`), data(65536, `,"Port":8472`)}},
		{"VNI 65536", `{"Type":"vxlan","VNI":65536}`, 65536,
			[]string{data(0, ""), data(65536, ""), data(65536, `,"Port":8472`)},
			[]string{data(0, `,"Port":8472`), data(1, "")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHost(t, tc.config)
			h.reconcile() // our address
			var peers []subnet.Lease
			var wantSkipped []backend.SkippedLease
			for i, d := range append(slices.Clone(tc.programmed), tc.skipped...) {
				n := i + 2
				l := lease(fmt.Sprintf("10.244.%d.0/24", n), fmt.Sprintf("198.18.0.%d", n), "vxlan", "")
				l.Attrs.BackendData = json.RawMessage(fmt.Sprintf(d, n))
				peers = append(peers, l)
				if i >= len(tc.programmed) {
					var ld leaseData
					if err := json.Unmarshal(l.Attrs.BackendData, &ld); err != nil {
						t.Fatal(err)
					}
					wantSkipped = append(wantSkipped, backend.SkippedLease{Key: l.Key(), Reason: fmt.Sprintf("VNI %d, ours is %d", ld.VNI, tc.vni)})
				}
			}
			res := h.reconcile(peers...)
			slices.SortFunc(res.SkippedLeases, func(a, b backend.SkippedLease) int { return strings.Compare(a.Key, b.Key) })
			if res.Added != 3*len(tc.programmed) || !slices.Equal(res.SkippedLeases, wantSkipped) {
				t.Errorf("result %v, skipped %v; want %d added, skipped %v", res, res.SkippedLeases, 3*len(tc.programmed), wantSkipped)
			}
			dev := h.link(DeviceName(tc.vni)).Attrs().Index
			for i, p := range peers {
				got := h.routesTo(p.Subnet.String())
				want := fmt.Sprintf("%s via %s dev#%d proto 74", p.Subnet, p.Subnet.Addr(), dev)
				if i >= len(tc.programmed) {
					want = ""
				}
				if got != want {
					t.Errorf("peer %s: routes %q, want %q", p.Attrs.BackendData, got, want)
				}
			}
		})
	}
}

// TestDirectRoutingSplit: with DirectRouting, a peer on our segment gets a
// route straight to its public IP, no VXLAN, so a VNI or port other than
// ours does not matter to it: it is programmed whatever its lease says of
// them, and only a peer we would encapsulate to is skipped for them.
// Before, the VNI and port were judged first, so a cluster split by a
// VNI or Port change lost the direct routes too, to peers that need none.
func TestDirectRoutingSplit(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan","DirectRouting":true}`)
	h.reconcile() // our address
	withData := func(sn, pub, data string) subnet.Lease {
		l := lease(sn, pub, "vxlan", "")
		l.Attrs.BackendData = json.RawMessage(data)
		return l
	}
	nearVNI := withData("10.244.2.0/24", "198.18.0.2", `{"VNI":2,"VtepMAC":"02:00:00:00:00:02","Port":8472}`)
	nearVNI0 := withData("10.244.3.0/24", "198.18.0.3", `{"VNI":0,"VtepMAC":"02:00:00:00:00:03"}`)
	nearPort := withData("10.244.4.0/24", "198.18.0.4", `{"VNI":1,"VtepMAC":"02:00:00:00:00:04","Port":4789}`)
	farVNI := withData("10.244.5.0/24", "198.19.0.5", `{"VNI":2,"VtepMAC":"02:00:00:00:00:05","Port":8472}`)
	farPort := withData("10.244.6.0/24", "198.19.0.6", `{"VNI":1,"VtepMAC":"02:00:00:00:00:06","Port":4789}`)
	res := h.reconcile(nearVNI, nearVNI0, nearPort, farVNI, farPort)
	wantSkipped := []backend.SkippedLease{
		{Key: farVNI.Key(), Reason: "VNI 2, ours is 1"},
		{Key: farPort.Key(), Reason: "UDP port 4789, ours is 8472"},
	}
	slices.SortFunc(res.SkippedLeases, func(a, b backend.SkippedLease) int { return strings.Compare(a.Key, b.Key) })
	if res.Added != 3 || !slices.Equal(res.SkippedLeases, wantSkipped) {
		t.Errorf("result %v, skipped %v; want 3 added, skipped %v", res, res.SkippedLeases, wantSkipped)
	}
	h.check(withBase("route 10.244.2.0/24 via 198.18.0.2 dev ext0 proto 74\n" +
		"route 10.244.3.0/24 via 198.18.0.3 dev ext0 proto 74\n" +
		"route 10.244.4.0/24 via 198.18.0.4 dev ext0 proto 74\n"))
}
