package iptables

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ctCase is a conntrack entry, as `conntrack -L` prints its tuples
// ("src:sport>dst:dport"), and whether DeleteUnmasqueraded deletes it, for
// the cluster network 10.244.0.0/16 on a host with the addresses
// 198.18.0.1 and 10.244.1.1 (its local table).
type ctCase struct {
	name         string
	proto        uint8
	orig, reply  string
	unmasquerade bool
}

var ctCases = []ctCase{
	{"pod to outside, not NATed", unix.IPPROTO_UDP, "10.244.1.2:5000>198.18.1.10:53", "198.18.1.10:53>10.244.1.2:5000", true},
	{"pod to outside, TCP, not NATed", unix.IPPROTO_TCP, "10.244.1.2:5001>198.18.1.10:443", "198.18.1.10:443>10.244.1.2:5001", true},
	{"pod to outside, ICMP, not NATed", unix.IPPROTO_ICMP, "10.244.1.2:0>198.18.1.10:0", "198.18.1.10:0>10.244.1.2:0", true},
	{"pod to a service, DNATed outside, not SNATed", unix.IPPROTO_UDP, "10.244.1.2:5002>198.19.0.10:53", "198.18.1.10:53>10.244.1.2:5002", true},
	{"pod to outside, masqueraded", unix.IPPROTO_UDP, "10.244.1.2:5003>198.18.1.10:53", "198.18.1.10:53>198.18.0.1:61003", false},
	{"pod to outside, source port NATed only", unix.IPPROTO_UDP, "10.244.1.2:5004>198.18.1.10:53", "198.18.1.10:53>10.244.1.2:61004", false},
	{"pod to a pod of another host", unix.IPPROTO_UDP, "10.244.1.2:5005>10.244.2.9:53", "10.244.2.9:53>10.244.1.2:5005", false},
	{"pod to a service, DNATed to a pod", unix.IPPROTO_UDP, "10.244.1.2:5006>198.19.0.10:53", "10.244.2.9:53>10.244.1.2:5006", false},
	{"pod to a service, DNATed to this host", unix.IPPROTO_TCP, "10.244.1.2:5007>198.19.0.1:443", "198.18.0.1:6443>10.244.1.2:5007", false},
	{"pod to this host", unix.IPPROTO_UDP, "10.244.1.2:5008>198.18.0.1:53", "198.18.0.1:53>10.244.1.2:5008", false},
	{"pod to this host's broadcast", unix.IPPROTO_UDP, "10.244.1.2:5009>198.18.0.255:67", "198.18.0.255:67>10.244.1.2:5009", false},
	{"pod to multicast", unix.IPPROTO_UDP, "10.244.1.2:5010>224.0.0.251:5353", "224.0.0.251:5353>10.244.1.2:5010", false},
	{"pod to the limited broadcast", unix.IPPROTO_UDP, "10.244.1.2:5011>255.255.255.255:67", "255.255.255.255:67>10.244.1.2:5011", false},
	{"outside to a pod", unix.IPPROTO_UDP, "198.18.1.10:5012>10.244.1.2:53", "10.244.1.2:53>198.18.1.10:5012", false},
	{"this host to a pod of another host", unix.IPPROTO_UDP, "198.18.0.1:5013>10.244.2.9:53", "10.244.2.9:53>198.18.0.1:5013", false},
	{"outside to outside", unix.IPPROTO_UDP, "198.18.1.10:5014>198.18.1.11:53", "198.18.1.11:53>198.18.1.10:5014", false},
	{"IPv6", unix.IPPROTO_UDP, "[fd00::2]:5015>[2001:db8::1]:53", "[2001:db8::1]:53>[fd00::2]:5015", false},
}

var ctLocal = []netip.Prefix{
	netip.MustParsePrefix("198.18.0.1/32"), netip.MustParsePrefix("198.18.0.255/32"),
	netip.MustParsePrefix("10.244.1.1/32"), netip.MustParsePrefix("127.0.0.0/8"),
}

func ctTuple(t testing.TB, proto uint8, s string) netlink.IPTuple {
	t.Helper()
	from, to, ok := strings.Cut(s, ">")
	if !ok {
		t.Fatalf("tuple %q: no >", s)
	}
	src, dst := netip.MustParseAddrPort(from), netip.MustParseAddrPort(to)
	return netlink.IPTuple{Protocol: proto, SrcIP: src.Addr().AsSlice(), SrcPort: src.Port(), DstIP: dst.Addr().AsSlice(), DstPort: dst.Port()}
}

func ctFlow(t testing.TB, c ctCase) *netlink.ConntrackFlow {
	t.Helper()
	family := uint8(unix.AF_INET)
	if strings.HasPrefix(c.orig, "[") {
		family = unix.AF_INET6
	}
	return &netlink.ConntrackFlow{FamilyType: family, TimeOut: 600, Forward: ctTuple(t, c.proto, c.orig), Reverse: ctTuple(t, c.proto, c.reply)}
}

// TestUnmasqueradedMatch: only entries of flows from the cluster network to
// a destination outside it that is not this host's, not multicast and not
// the limited broadcast, without any source NAT, are those of flows that
// left unmasqueraded.
func TestUnmasqueradedMatch(t *testing.T) {
	f := unmasqueraded{cluster: netip.MustParsePrefix("10.244.0.0/16"), local: ctLocal}
	for _, c := range ctCases {
		if got := f.MatchConntrackFlow(ctFlow(t, c)); got != c.unmasquerade {
			t.Errorf("%s (%s, %s): matched %v, want %v", c.name, c.orig, c.reply, got, c.unmasquerade)
		}
	}
}

// ctNetns is a namespace of nstest's with the addresses of ctLocal on a
// veth: a netlink handle there for conntrack and routes, and the
// namespace's handle.
func ctNetns(t testing.TB) (*netlink.Handle, netns.NsHandle) {
	t.Helper()
	ns := nstest.New(t)
	l := ns.AddVeth(t, "ct0", "ct1", netip.MustParsePrefix("198.18.0.1/24"))
	if err := ns.Handle.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.1/24"))}); err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns.NsHandle, unix.NETLINK_NETFILTER, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("open netlink in %s: %v", ns.Name, err)
	}
	t.Cleanup(h.Close)
	return h, ns.NsHandle
}

// ctList prints the entries of the namespace's IPv4 conntrack table, one
// sorted "src:sport>dst:dport reply src:sport>dst:dport" line each.
func ctList(t testing.TB, h *netlink.Handle) string {
	t.Helper()
	flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	tuple := func(x netlink.IPTuple) string {
		return fmt.Sprintf("%s:%d>%s:%d", x.SrcIP, x.SrcPort, x.DstIP, x.DstPort)
	}
	var lines []string
	for _, f := range flows {
		lines = append(lines, tuple(f.Forward)+" reply "+tuple(f.Reverse))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestRootDeleteUnmasqueraded: in a namespace holding the IPv4 UDP entries
// of ctCases, DeleteUnmasqueraded deletes those of flows that left
// unmasqueraded, says how many, and leaves the others; the NATed entry, the
// one inside the cluster network, the one to this host among them. A second
// call finds none. Real conntrack, through netlink.
func TestRootDeleteUnmasqueraded(t *testing.T) {
	h, ns := ctNetns(t)
	wantDeleted := 0
	var kept []string
	for _, c := range ctCases {
		if c.proto != unix.IPPROTO_UDP || strings.HasPrefix(c.orig, "[") {
			continue
		}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, ctFlow(t, c)); err != nil {
			t.Fatalf("create the entry of %s: %v", c.name, err)
		}
		if c.unmasquerade {
			wantDeleted++
			continue
		}
		o, r := ctTuple(t, c.proto, c.orig), ctTuple(t, c.proto, c.reply)
		kept = append(kept, fmt.Sprintf("%s:%d>%s:%d reply %s:%d>%s:%d", o.SrcIP, o.SrcPort, o.DstIP, o.DstPort, r.SrcIP, r.SrcPort, r.DstIP, r.DstPort))
	}
	slices.Sort(kept)
	want := strings.Join(kept, "\n")

	n, err := DeleteUnmasqueraded(t.Context(), ns, netip.MustParsePrefix("10.244.0.0/16"))
	if err != nil {
		t.Fatal(err)
	}
	if n != wantDeleted {
		t.Errorf("deleted %d entries, want %d", n, wantDeleted)
	}
	if got := ctList(t, h); got != want {
		t.Errorf("entries left:\n%s\nwant:\n%s", got, want)
	}
	if n, err := DeleteUnmasqueraded(t.Context(), ns, netip.MustParsePrefix("10.244.0.0/16")); n != 0 || err != nil {
		t.Errorf("second call: deleted %d, err %v; want 0, nil", n, err)
	}
}

// BenchmarkRootDeleteUnmasqueraded is the cost of a call on a busy node's
// conntrack table, 50 000 masqueraded flows, of which it deletes none: one
// read of the whole table.
func BenchmarkRootDeleteUnmasqueraded(b *testing.B) {
	h, ns := ctNetns(b)
	start := time.Now()
	for i := range 50_000 {
		sport := uint16(1024 + i%60000)
		dst := netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/60000), byte(i % 250)})
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 3600,
			Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: []byte{10, 244, 1, 2}, SrcPort: sport, DstIP: dst.AsSlice(), DstPort: 53},
			Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: dst.AsSlice(), SrcPort: 53, DstIP: []byte{198, 18, 0, 1}, DstPort: sport}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			b.Fatalf("entry %d: %v", i, err)
		}
	}
	b.Logf("50000 entries made in %v", time.Since(start).Round(time.Millisecond))
	b.ResetTimer()
	for b.Loop() {
		if n, err := DeleteUnmasqueraded(b.Context(), ns, netip.MustParsePrefix("10.244.0.0/16")); n != 0 || err != nil {
			b.Fatalf("deleted %d, err %v", n, err)
		}
	}
}

// TestWrote: Wrote names the tables the last Reconcile wrote: nat at the
// masquerade rules' first installation and at their repair after a flush,
// nothing when they were in place, and not a table whose write failed.
func TestWrote(t *testing.T) {
	m, f := newTestManager(t)
	masq := MasqRules(netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.5.0/24"), true)
	wrote := func(when string, nat, filter bool) {
		t.Helper()
		if m.Wrote("nat") != nat || m.Wrote("filter") != filter {
			t.Errorf("%s: Wrote nat %v, filter %v; want %v, %v", when, m.Wrote("nat"), m.Wrote("filter"), nat, filter)
		}
	}
	mustReconcile(t, m, masq, true)
	wrote("first installation", true, false)
	mustReconcile(t, m, masq, false)
	wrote("in place", false, false)
	if err := f.apply("nat", "*nat\n:AGENTD-POSTRTG - [0:0]\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	mustReconcile(t, m, masq, true)
	wrote("repair", true, false)
	if err := f.apply("nat", "*nat\n:AGENTD-POSTRTG - [0:0]\nCOMMIT\n"); err != nil {
		t.Fatal(err)
	}
	f.restoreErr = fmt.Errorf("restore refused")
	if _, err := m.Reconcile(masq); err == nil {
		t.Fatal("Reconcile with the restore refused: no error")
	}
	wrote("failed repair", false, false)
}

// ctFill makes n entries of flows that left unmasqueraded (pod to outside,
// no NAT) in h's namespace.
func ctFill(t testing.TB, h *netlink.Handle, n int) {
	t.Helper()
	start := time.Now()
	for i := range n {
		sport := uint16(1024 + i%60000)
		dst := netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/60000), byte(i % 250)})
		f := &netlink.ConntrackFlow{FamilyType: unix.AF_INET, TimeOut: 3600,
			Forward: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: []byte{10, 244, 1, 2}, SrcPort: sport, DstIP: dst.AsSlice(), DstPort: 53},
			Reverse: netlink.IPTuple{Protocol: unix.IPPROTO_UDP, SrcIP: dst.AsSlice(), SrcPort: 53, DstIP: []byte{10, 244, 1, 2}, DstPort: sport}}
		if err := h.ConntrackCreate(netlink.ConntrackTable, unix.AF_INET, f); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	t.Logf("%d entries made in %v", n, time.Since(start).Round(time.Millisecond))
}

// TestRootDeleteUnmasqueradedStops: DeleteUnmasqueraded returns ctx's
// error once ctx is done, before its read or in the middle of the reads and
// deletes of a long table, having deleted only part of it and said how much.
func TestRootDeleteUnmasqueradedStops(t *testing.T) {
	h, ns := ctNetns(t)
	const entries = 30_000
	ctFill(t, h, entries)
	network := netip.MustParsePrefix("10.244.0.0/16")
	left := func() int {
		flows, err := h.ConntrackTableList(netlink.ConntrackTable, unix.AF_INET)
		if err != nil {
			t.Fatal(err)
		}
		return len(flows)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if n, err := DeleteUnmasqueraded(ctx, ns, network); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("stopped before: deleted %d, err %v; want 0, %v", n, err, context.Canceled)
	}

	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	var stopped time.Time
	time.AfterFunc(20*time.Millisecond, func() { stopped = time.Now(); cancel() })
	start := time.Now()
	n, err := DeleteUnmasqueraded(ctx, ns, network)
	end := time.Now()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("stopped while reading or deleting: deleted %d, err %v; want %v", n, err, context.Canceled)
	}
	if got := left(); n >= entries || got != entries-n {
		t.Errorf("stopped while reading or deleting: deleted %d, %d entries left; want fewer than %d deleted, the rest left", n, got, entries)
	}
	t.Logf("stopped %v after its start, returned %v after the stop, having deleted %d of %d", stopped.Sub(start).Round(time.Millisecond), end.Sub(stopped).Round(time.Microsecond), n, entries)
}
