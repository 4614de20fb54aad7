package vxlan

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// TestSkipReasons: leases that only bad data or a NAT make are skipped
// with their own reason, logged once each, and the other peers are
// programmed: a subnet inside ours that does not hold our device's
// address <own subnet>.0 (which would take part of our own subnet's
// traffic into the tunnel), a lease without an IPv4 public IP, and, on a
// host behind a NAT (public IP 203.0.113.1, local address 198.18.0.1),
// leases at either of our addresses: another host behind the same NAT
// address, which VXLAN cannot tell from us, and one at our local address;
// and a lease with our VtepMAC (a state dir copied from this host), whose
// FDB entry and neighbour would send its subnet's traffic to our own MAC.
func TestSkipReasons(t *testing.T) {
	h := unpreparedHost(t, `{"Type":"vxlan"}`, 0)
	h.cfg.External.PublicIP = netip.MustParseAddr("203.0.113.1")
	h.b = h.newBackend()
	h.prepare()
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	noIP := lease("10.244.4.0/24", "198.18.0.4", "vxlan", "02:00:00:00:00:04")
	noIP.Attrs.PublicIP = netip.Addr{}
	v6 := lease("10.244.5.0/24", "198.18.0.5", "vxlan", "02:00:00:00:00:05")
	v6.Attrs.PublicIP, v6.Attrs.PublicIPv6 = netip.Addr{}, netip.MustParseAddr("2001:db8::5")
	bad := []struct {
		l      subnet.Lease
		reason string
	}{
		{lease("10.244.1.128/25", "198.18.0.3", "vxlan", "02:00:00:00:00:03"), "subnet overlaps our own 10.244.1.0/24"},
		{noIP, "no IPv4 public IP"},
		{v6, "no IPv4 public IP"},
		{lease("10.244.6.0/24", "203.0.113.1", "vxlan", "02:00:00:00:00:06"), "public IP 203.0.113.1 is our own"},
		{lease("10.244.7.0/24", "198.18.0.1", "vxlan", "02:00:00:00:00:07"), "public IP 198.18.0.1 is our own"},
		{lease("10.244.8.0/24", "198.18.0.8", "vxlan", h.b.mac.String()), fmt.Sprintf("VtepMAC %s is our own", h.b.mac)},
	}
	peers := []subnet.Lease{p2}
	for _, b := range bad {
		peers = append(peers, b.l)
	}
	want := withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02"))
	if res := h.reconcile(peers...); res.String() != (backend.Result{Added: 4, Skipped: len(bad)}).String() {
		t.Errorf("first pass: %v, want the address and p2's three entries added, %d skipped", res, len(bad))
	}
	h.check(want)
	if res := h.reconcile(peers...); res.String() != (backend.Result{Skipped: len(bad)}).String() {
		t.Errorf("second pass: %v, want %d skipped, nothing changed", res, len(bad))
	}
	h.check(want)
	for _, b := range bad {
		once := fmt.Sprintf(`"lease"=%q "reason"=%q`, b.l.Key(), b.reason)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s; logs:\n%s", n, once, h.logText())
		}
	}
}
