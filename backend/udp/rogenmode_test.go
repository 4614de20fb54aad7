package udp

import (
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// roGenModeEnv tells the test binary it is TestReadOnlyProcSysPassQuiet's
// child.
const roGenModeEnv = "AGENTD_UDP_TEST_RO_GEN_MODE"

// TestReadOnlyProcSysPassQuiet: with /proc/sys read-only, the first pass
// keeps IPv6 off the device through its address generation mode; a later
// pass over the same device sets it no more. Setting it is a link change
// the kernel announces, and Watch wakes a pass for each event about
// flannel0: set on every pass, it would wake the next one, without end.
// The test runs itself again in a mount namespace of its own, as
// TestReadOnlyProcSys does. A change to ext0's alias after the second pass
// marks the end of what that pass announced.
func TestReadOnlyProcSysPassQuiet(t *testing.T) {
	if !inOwnMountNS(t, roGenModeEnv, "with /proc/sys read-only") {
		return
	}
	h := newTestHost(t, func(h *testHost) { readOnlyProcSys(t, h, "0") })
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type)}
	h.reconcile(peers...)
	if !h.logged("/proc/sys is read-only") {
		t.Fatalf("the first pass did not fall back to the address generation mode; logged:\n%s", h.logText())
	}

	updates, done := make(chan netlink.LinkUpdate, 64), make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{Namespace: &h.host.NsHandle}); err != nil {
		t.Fatal(err)
	}
	h.reconcile(peers...)
	ext, err := h.host.Handle.LinkByName("ext0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.host.Handle.LinkSetAlias(ext, "end of the second pass"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-updates:
			a := u.Attrs()
			if a.Name == DeviceName {
				t.Fatalf("the second pass announced a change of %s (flags %v): each would wake the next pass", DeviceName, a.Flags)
			}
			if a.Name == "ext0" && a.Alias == "end of the second pass" {
				return
			}
		case <-deadline:
			t.Fatal("no event for ext0's alias within 5s")
		}
	}
}
