package hostgw

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Tests of lines of the backend that no other test of the package needed
// (a mutation sweep, 2026-12-07): each fails with its line taken out.

// TestNewRefusesIPv6Interface: the external interface's address must be
// IPv4, the family of every route host-gw programs. An IPv6 one passed New,
// and Prepare then said the host was behind NAT.
func TestNewRefusesIPv6Interface(t *testing.T) {
	_, err := New(backend.Config{External: backend.ExternalInterface{
		Iface:     &net.Interface{Index: 2, Name: "ext0"},
		IfaceAddr: netip.MustParseAddr("fd00::1"),
		PublicIP:  netip.MustParseAddr("fd00::1"),
	}})
	const want = "host-gw: the external interface address fd00::1 is not IPv4"
	if err == nil || err.Error() != want {
		t.Fatalf("New with an IPv6 interface address: %v; want %q", err, want)
	}
}

// TestPrepareAfterContextEnded: Prepare called with a context that has
// ended (the agent stopping meanwhile) returns its error and leaves the
// backend unprepared: no "host-gw ready" line, and Reconcile refused.
func TestPrepareAfterContextEnded(t *testing.T) {
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.b.Prepare(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Prepare with an ended context: %v; want %v", err, context.Canceled)
	}
	if n := h.countLogs("host-gw ready"); n != 0 {
		t.Errorf("%d \"host-gw ready\" lines after a Prepare with an ended context; want 0", n)
	}
	if _, err := h.b.Reconcile(context.Background(), h.own, nil); err == nil || !strings.Contains(err.Error(), "Reconcile before Prepare") {
		t.Errorf("Reconcile after that Prepare: %v; want \"Reconcile before Prepare\"", err)
	}
}

// TestPassReportsFindings: a pass's Result carries what its ShadowLog
// found (Found), which the agent's /status shows as shadowingRoutes and
// strayAddresses; the log alone is not enough.
func TestPassReportsFindings(t *testing.T) {
	h := prepared(t)
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	block := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.64/26")), Type: unix.RTN_BLACKHOLE, Protocol: 12}
	if err := h.ns.Handle.RouteAdd(block); err != nil {
		t.Fatal(err)
	}
	res := h.reconcile(p2)
	if res.Found == nil || len(res.Found.Shadowing) != 1 || res.Found.Shadowing[0].PeerSubnet != "10.244.2.0/24" {
		t.Fatalf("Result.Found = %+v; want one route shadowing 10.244.2.0/24", res.Found)
	}
}

// TestStraysOnlyInLeasePool: with leases taken only from SubnetMin to
// SubnetMax (flannel's documented use of them, with Network holding the
// hosts' own network too), an address of a NIC in Network but outside that
// range takes nothing from any host and is not reported as a stray, while
// a bridge's address inside it is. The backend passes the network config's
// range to its ShadowLog: without it the NIC's address was reported too,
// with the advice to delete it.
func TestStraysOnlyInLeasePool(t *testing.T) {
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	h.cfg.Network.SubnetMin = netip.MustParseAddr("10.244.10.0")
	h.cfg.Network.SubnetMax = netip.MustParseAddr("10.244.20.0")
	b, err := newBackend(h.cfg, h.ns.Handle, h.ns.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	h.b = b
	h.own = lease("10.244.11.0/24", "198.18.0.1", Type)
	if _, err := h.b.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.ns.AddVeth(t, "nic1", "nic1p", netip.MustParsePrefix("10.244.2.5/24"))        // below SubnetMin
	h.ns.AddVeth(t, "docker0", "docker0p", netip.MustParsePrefix("10.244.15.1/24")) // in the pool
	res := h.reconcile(lease("10.244.12.0/24", "198.18.0.2", Type))
	if res.Found == nil || len(res.Found.Strays) != 1 || res.Found.Strays[0].Iface != "docker0" {
		t.Fatalf("strays found: %+v; want docker0's 10.244.15.1/24 alone; logs:\n%s", res.Found, h.logText())
	}
}

// TestPeerOverlappingOurSubnetSkipped: a lease of another host for our own
// subnet, or for a larger one that holds it (bad data, or a stale key), is
// skipped with why: a route to it through that host would take our own
// pods' traffic away from cni0.
func TestPeerOverlappingOurSubnetSkipped(t *testing.T) {
	h := prepared(t)
	same, wider := lease("10.244.1.0/24", "198.18.0.2", Type), lease("10.244.0.0/23", "198.18.0.3", Type)
	for _, l := range []subnet.Lease{same, wider} {
		if res := h.reconcile(l); res.Skipped != 1 {
			t.Errorf("pass with the lease %s: %v; want it skipped", l.Key(), res)
		}
		h.check("")
		reason := fmt.Sprintf(`"lease"=%q "reason"="subnet overlaps our own 10.244.1.0/24"`, l.Key())
		if n := h.countLogs(reason); n != 1 {
			t.Errorf("%d lines with %s; want 1; logs:\n%s", n, reason, h.logText())
		}
	}
}

// TestPeerWithOurPublicIPSkipped: a lease of another host that names our
// own public IP is skipped, and the reason says it is ours.
func TestPeerWithOurPublicIPSkipped(t *testing.T) {
	h := prepared(t)
	l := lease("10.244.2.0/24", "198.18.0.1", Type)
	if res := h.reconcile(l); res.Skipped != 1 {
		t.Fatalf("pass: %v; want the lease skipped", res)
	}
	h.check("")
	reason := fmt.Sprintf(`"lease"=%q "reason"="public IP 198.18.0.1 is our own"`, l.Key())
	if n := h.countLogs(reason); n != 1 {
		t.Errorf("%d lines with %s; want 1; logs:\n%s", n, reason, h.logText())
	}
}

// TestOwnSubnetRouteOnBridgeLeft: another program's route to our own
// subnet through cni0 (here proto static, cni0's address added with
// noprefixroute) is no route of ours to take over: only one through the
// external interface is (flanneld's, left from when a peer held the
// subnet). The kernel's own routes are never taken over.
func TestOwnSubnetRouteOnBridgeLeft(t *testing.T) {
	h := prepared(t)
	nl := h.ns.Handle
	cni0 := h.ns.AddVeth(t, "cni0", "cni0p", netip.Prefix{})
	if err := nl.AddrAdd(cni0, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.1/24")), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		t.Fatal(err)
	}
	own := netip.MustParsePrefix("10.244.1.0/24")
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(own), LinkIndex: cni0.Attrs().Index, Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	p2 := lease("10.244.2.0/24", "198.18.0.2", Type)
	for range 2 {
		if res := h.reconcile(p2); res.Removed != 0 || res.Updated != 0 {
			t.Fatalf("pass: %v; want nothing removed or updated", res)
		}
	}
	routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{LinkIndex: cni0.Attrs().Index}, netlink.RT_FILTER_OIF)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if d, ok := backend.PrefixFromIPNet(r.Dst); ok && d == own {
			return
		}
	}
	t.Fatalf("cni0's route to %s is gone; routes through cni0: %v", own, routes)
}

// TestDroppedBackendLetsGoOfAddressEvents: the agent drops a prepared
// backend that never ran (a new config came before a lease was held) by
// running its Watch with an ended context; that ends the subscription to
// the address events Prepare took, whose context lives on, rather than
// leave its netlink socket open until the agent stops.
func TestDroppedBackendLetsGoOfAddressEvents(t *testing.T) {
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	before := openFiles(t)
	if _, err := h.b.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	held := openFiles(t)
	if held <= before {
		t.Fatalf("%d open files after Prepare, %d before: want its subscription's socket", held, before)
	}
	ended, end := context.WithCancel(context.Background())
	end()
	if err := h.b.Watch(ended, func() {}); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch with an ended context: %v", err)
	}
	nstest.Await(t, 2*time.Second, "the subscription's socket closed", func() error {
		if n := openFiles(t); n >= held {
			return fmt.Errorf("%d open files, %d after Prepare", n, held)
		}
		return nil
	})
}

// openFiles counts the test process's open file descriptors.
func openFiles(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// TestNoPrefixRouteAddressWakes: an address of the external interface added
// with noprefixroute makes no route event, and may still put a peer
// on-link (its segment's route in a table that a rule sends the kernel's
// check to, TestOnLinkNoPrefixRouteByPolicyRule). Watch wakes for every
// address event of the external interface, so the peer is routed at once,
// not at the next resync.
func TestNoPrefixRouteAddressWakes(t *testing.T) {
	h, _ := newNoPrefixRouteHost(t)
	nl, ext := h.ns.Handle, h.ext.Attrs().Index
	rule := netlink.NewRule()
	rule.OifName, rule.Table, rule.Priority = "ext0", 100, 100
	if err := nl.RuleAdd(rule); err != nil {
		t.Fatal(err)
	}
	if err := nl.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("198.19.0.0/24")), LinkIndex: ext, Scope: netlink.SCOPE_LINK, Table: 100}); err != nil {
		t.Fatal(err)
	}
	far := lease("10.244.4.0/24", "198.19.0.4", Type)
	if res := h.reconcile(far); res.String() != (backend.Result{Skipped: 1}).String() {
		t.Fatalf("result %v, want the peer skipped: no address of ext0 in 198.19.0.0/24", res)
	}
	wakes, stop := h.watch(t)
	defer stop()
	if err := nl.AddrAdd(h.ext, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.19.0.1/24")), Flags: unix.IFA_F_NOPREFIXROUTE}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wakes:
	case <-time.After(5 * time.Second):
		t.Fatal("no wake within 5 s of a noprefixroute address added to ext0")
	}
	if res := h.reconcile(far); res.String() != (backend.Result{Added: 1}).String() {
		t.Errorf("after the address: result %v, want 1 added", res)
	}
}

// TestMTUFollowed: a pass takes the external interface's MTU when it
// changed, for the agent to rewrite subnet.env, and says so once.
func TestMTUFollowed(t *testing.T) {
	h := prepared(t)
	if err := h.ns.Handle.LinkSetMTU(h.ext, 1400); err != nil {
		t.Fatal(err)
	}
	h.reconcile()
	h.reconcile()
	if got := h.b.MTU(); got != 1400 {
		t.Errorf("MTU() = %d after ext0's MTU was set to 1400; want 1400", got)
	}
	const said = `"msg"="the external interface's MTU changed" "iface"="ext0" "was"=1500 "mtu"=1400`
	if n := h.countLogs(said); n != 1 {
		t.Errorf("%d lines with %s; want 1; logs:\n%s", n, said, h.logText())
	}
}

// TestMTUBelowIPv4Kept: an MTU under 68, which IPv4 cannot use (the kernel
// takes the interface's IPv4 addresses away), is not taken for subnet.env;
// the agent's check of the interface reports the lost address. A loopback
// device takes such an MTU (an Ethernet device's minimum is 68).
func TestMTUBelowIPv4Kept(t *testing.T) {
	h := newHost(t, "198.18.0.1", "198.18.0.1")
	nl := h.ns.Handle
	lo, err := nl.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
	if err := nl.AddrAdd(lo, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.9.1/24"))}); err != nil {
		t.Fatal(err)
	}
	if lo, err = nl.LinkByName("lo"); err != nil {
		t.Fatal(err)
	}
	h.cfg.External = backend.ExternalInterface{Iface: &net.Interface{Index: lo.Attrs().Index, Name: "lo", MTU: lo.Attrs().MTU},
		IfaceAddr: netip.MustParseAddr("198.18.9.1"), PublicIP: netip.MustParseAddr("198.18.9.1")}
	if h.b, err = newBackend(h.cfg, nl, h.ns.NsHandle); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	was := h.b.MTU()
	if err := nl.LinkSetMTU(lo, 60); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.Reconcile(context.Background(), h.own, nil); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if got := h.b.MTU(); got != was {
		t.Errorf("MTU() = %d after lo's MTU was set to 60; want %d, the last usable one", got, was)
	}
}
