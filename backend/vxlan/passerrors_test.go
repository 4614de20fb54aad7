package vxlan

import (
	"context"
	"errors"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestOwnLeaseWithoutIPv4Refused: a pass given an own lease with no IPv4
// subnet fails, saying so, and changes nothing: the device keeps its
// address and the peers their entries.
func TestOwnLeaseWithoutIPv4Refused(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	h.reconcile(p2)
	for _, own := range []subnet.Lease{{}, {Subnet: netip.MustParsePrefix("fd00:10:244:1::/64")}} {
		res, err := h.b.Reconcile(context.Background(), own, []subnet.Lease{p2})
		if err == nil || !strings.Contains(err.Error(), "our own lease has no IPv4 subnet") {
			t.Errorf("pass with our lease %v: %v; want our own lease has no IPv4 subnet", own.Subnet, err)
		}
		if res.Changed() {
			t.Errorf("pass with our lease %v changed %v; want nothing", own.Subnet, res)
		}
		h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))
	}
}

// TestRefusedWriteFailsPass: a write the kernel refuses fails the pass,
// naming the object and the kernel's error, and the pass still programs
// everything else. Here 10.244.2.0, the gateway of the peer's route, is a
// local address by a route in the local table, which the kernel's check of
// an onlink gateway reads directly, and so refuses it (EINVAL); but the
// policy rules send a packet to 10.244.2.0 to table 100 first (the local
// table's rule moved behind), where it is an ordinary host on ext0, so the
// pass's own look-up (localGateways) does not see it as local and does not
// skip the peer (TestLocalRouteGatewaySkipped). Once that local route is
// gone, the next pass adds the route.
func TestRefusedWriteFailsPass(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	lo := h.link("lo")
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	local := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.0/32")), LinkIndex: lo.Attrs().Index,
		Type: unix.RTN_LOCAL, Table: unix.RT_TABLE_LOCAL, Scope: unix.RT_SCOPE_HOST}
	if err := nl.RouteAdd(local); err != nil {
		t.Fatal(err)
	}
	localLater, localFirst, toTable100 := netlink.NewRule(), netlink.NewRule(), netlink.NewRule()
	localLater.Table, localLater.Priority = unix.RT_TABLE_LOCAL, 100
	localFirst.Table, localFirst.Priority = unix.RT_TABLE_LOCAL, 0
	toTable100.Table, toTable100.Priority, toTable100.Dst = 100, 50, backend.IPNet(netip.MustParsePrefix("10.244.2.0/24"))
	inTable100 := &netlink.Route{Dst: toTable100.Dst, LinkIndex: h.ext.Attrs().Index, Table: 100, Scope: unix.RT_SCOPE_LINK}
	if err := errors.Join(nl.RuleAdd(localLater), nl.RuleDel(localFirst), nl.RuleAdd(toTable100), nl.RouteAdd(inTable100)); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	p3 := lease("10.244.3.0/24", "198.18.0.3", "vxlan", "02:00:00:00:00:03")
	// p2's FDB entry and neighbour, not its route.
	p2Lines := strings.SplitAfter(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"), "\n")
	programmed := withBase(p2Lines[0] + p2Lines[1] + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03"))
	for pass := 1; pass <= 2; pass++ {
		res, err := h.b.Reconcile(context.Background(), h.own, []subnet.Lease{p2, p3})
		if err == nil || !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "10.244.2.0/24") {
			t.Fatalf("pass %d with 10.244.2.0 local: %v; want the route to 10.244.2.0/24 refused (EINVAL)", pass, err)
		}
		switch {
		case pass == 1 && res.String() != (backend.Result{Added: 6}).String():
			t.Errorf("pass %d: %v, want 6 added (address, p2's FDB entry and neighbour, p3's three)", pass, res)
		case pass == 2 && res.Changed():
			t.Errorf("pass %d: %v, want nothing changed", pass, res)
		}
		h.check(programmed)
	}
	if err := nl.RouteDel(local); err != nil {
		t.Fatal(err)
	}
	if res := h.reconcile(p2, p3); res.Added != 1 {
		t.Errorf("pass with the local route gone: %v, want p2's route added", res)
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02") + peerLines("10.244.3.0/24", "198.18.0.3", "02:00:00:00:00:03")))
}

// TestAddressRefusedFailsPass: when our lease's subnet changes and the
// kernel refuses the device's new address, the pass fails, naming it. The
// pass runs on a thread without CAP_NET_ADMIN, so that every write it
// makes is refused (EPERM) while it reads as before; with no peer, the
// address is its only write.
func TestAddressRefusedFailsPass(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	h.reconcile()
	h.own = lease("10.244.7.0/24", "198.18.0.1", "vxlan", "")
	var err error
	withoutNetAdmin(t, func() { _, err = h.b.Reconcile(context.Background(), h.own, nil) })
	if err == nil || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "10.244.7.0/32") {
		t.Fatalf("pass whose address was refused: %v; want the address 10.244.7.0/32 refused (EPERM)", err)
	}
	h.check(base)
	h.reconcile()
	h.check(strings.Replace(base, "10.244.1.0/32", "10.244.7.0/32", 1)[1:])
}

// withoutNetAdmin runs f on a thread of its own whose effective
// capabilities lack CAP_NET_ADMIN. The thread ends with f: its goroutine
// never unlocks it.
func withoutNetAdmin(t *testing.T, f func()) {
	t.Helper()
	failed := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			failed <- err
			return
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			failed <- err
			return
		}
		f()
		failed <- nil
	}()
	if err := <-failed; err != nil {
		t.Fatalf("drop CAP_NET_ADMIN: %v", err)
	}
}
