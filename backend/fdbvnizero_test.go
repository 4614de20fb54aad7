package backend_test

import (
	"fmt"
	"net/netip"
	"os/exec"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
)

// TestFDBVNIZero: on a device whose VNI is not 0, an FDB entry with VNI 0
// is listed with VNIZero, unlike one with the device's VNI (the kernel
// reports NDA_VNI 0 for the one and no NDA_VNI for the other; netlink reads
// both as VNI 0); DelFDB deletes an all-zeros MAC's destination with VNI 0
// and leaves the one with the device's VNI beside it.
func TestFDBVNIZero(t *testing.T) {
	ns, idx := vxlanVNI7(t)
	h := ns.Handle
	list := func(h *netlink.Handle) ([]backend.FDB, error) { return backend.ListFDBOn(h, idx) }
	w := backend.NetlinkWriter{H: h}
	// add appends a destination with VNI vni (-1: none named, the device's).
	add := func(mac backend.MAC, dst string, vni int) {
		t.Helper()
		req := []string{"-n", ns.Name, "fdb", "append", mac.String(), "dev", "vx0", "dst", dst, "self", "permanent"}
		if vni >= 0 {
			req = append(req, "vni", fmt.Sprint(vni))
		}
		bridge(t, req...)
	}
	peer := backend.MAC{2, 0, 0, 0, 0, 2}
	add(peer, "198.18.0.2", 0)
	zero0 := backend.FDB{LinkIndex: idx, Dst: netip.MustParseAddr("198.18.0.8"), VNIZero: true, Permanent: true}
	add(zero0.MAC, "198.18.0.8", 0)
	zero7 := backend.FDB{LinkIndex: idx, Dst: netip.MustParseAddr("198.18.0.9"), Permanent: true}
	add(zero7.MAC, "198.18.0.9", -1)
	peer0 := backend.FDB{LinkIndex: idx, MAC: peer, Dst: netip.MustParseAddr("198.18.0.2"), VNIZero: true, Permanent: true}
	checkListAnyOrder(t, list, h, []backend.FDB{peer0, zero0, zero7})
	if got, want := peer0.String(), fmt.Sprintf("fdb 02:00:00:00:00:02 dst 198.18.0.2 dev#%d vni 0", idx); got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}

	// Corrected to the device's VNI.
	ours := peer0
	ours.VNIZero = false
	if err := w.SetFDB(ours); err != nil {
		t.Fatal(err)
	}
	checkListAnyOrder(t, list, h, []backend.FDB{ours, zero0, zero7})

	if err := w.DelFDB(zero0); err != nil {
		t.Errorf("DelFDB(%v) = %v", zero0, err)
	}
	checkListAnyOrder(t, list, h, []backend.FDB{ours, zero7})
}

// bridge runs iproute2's bridge with args, as an operator would; it skips
// outside CI without it.
func bridge(t *testing.T, args ...string) {
	t.Helper()
	cmd, err := exec.LookPath("bridge")
	if err != nil {
		nstest.Missing(t, "no bridge command (iproute2)")
	}
	if out, err := exec.Command(cmd, args...).CombinedOutput(); err != nil {
		t.Fatalf("bridge %v: %v: %s", args, err, out)
	}
}

func checkListAnyOrder(t *testing.T, list func(*netlink.Handle) ([]backend.FDB, error), h *netlink.Handle, want []backend.FDB) {
	t.Helper()
	got, err := list(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("fdb = %v, want %v", got, want)
	}
	for _, w := range want {
		if !slices.Contains(got, w) {
			t.Fatalf("fdb = %v, want %v", got, want)
		}
	}
}
