package vxlan

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
)

// TestFDBOtherVNIOnFlannel0And1: an FDB entry whose VNI is not the device's
// is drift, also when one of the two is 0: with VNI 0 on flannel.1 (the
// kernel then reports NDA_VNI 0, which netlink reads as no NDA_VNI) and with
// VNI 1 on flannel.0. A peer's entry is corrected to the device's VNI and an
// unwanted one deleted, each counted once as an "fdb" change (what
// agentd_drift_repairs_total{kind="fdb"} adds); the next pass finds nothing
// to do. Before, a peer's entry with VNI 0 on flannel.1 was taken as
// correct and its traffic left with VNI 0, which the peer's flannel.1
// drops; an all-zeros entry with VNI 0 was "deleted", and counted, on every
// pass and stayed.
func TestFDBOtherVNIOnFlannel0And1(t *testing.T) {
	for _, vni := range []int{1, 0} {
		dev, other := fmt.Sprintf("flannel.%d", vni), fmt.Sprint(1-vni)
		p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "")
		p2.Attrs.BackendData = json.RawMessage(fmt.Sprintf(`{"VNI":%d,"VtepMAC":"02:00:00:00:00:02"}`, vni))
		for _, tc := range []struct {
			name string
			cmd  []string
			res  backend.Result
		}{
			{"a peer's", []string{"replace", "02:00:00:00:00:02", "dev", dev, "dst", "198.18.0.2", "vni", other, "self", "permanent"},
				backend.Result{Updated: 1}},
			{"unwanted all-zeros", []string{"append", "00:00:00:00:00:00", "dev", dev, "dst", "198.18.0.9", "vni", other}, backend.Result{Removed: 1}},
			{"unwanted", []string{"append", "02:00:00:00:00:09", "dev", dev, "dst", "198.18.0.9", "vni", other}, backend.Result{Removed: 1}},
		} {
			t.Run(fmt.Sprintf("%s, %s with vni %s", dev, tc.name, other), func(t *testing.T) {
				h := newHost(t, fmt.Sprintf(`{"Type":"vxlan","VNI":%d}`, vni))
				show := func() string {
					lines := strings.Split(strings.TrimSpace(h.bridge("fdb", "show", "dev", dev)), "\n")
					slices.Sort(lines)
					return strings.Join(lines, "\n") + "\n"
				}
				const ours = "02:00:00:00:00:02 dst 198.18.0.2 self permanent\n"
				h.reconcile(p2)
				h.bridge(append([]string{"fdb"}, tc.cmd...)...)
				if got := show(); got == ours {
					t.Fatalf("bridge fdb %s changed nothing", strings.Join(tc.cmd, " "))
				}
				res := h.reconcile(p2)
				if res.String() != tc.res.String() || res.ByKind["fdb"] != 1 || len(res.ByKind) != 1 {
					t.Errorf("result %v, by kind %v; want %v, fdb 1", res, res.ByKind, tc.res)
				}
				if got := show(); got != ours {
					t.Errorf("bridge fdb show:\n%swant:\n%s", got, ours)
				}
				if res := h.reconcile(p2); res.Changed() {
					t.Errorf("a second pass changed %v (by kind %v):\n%s", res, res.ByKind, show())
				}
			})
		}
	}
}
