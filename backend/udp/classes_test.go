package udp

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
)

// TestDesiredPublicIPClasses: udp judges a public IP as vxlan and host-gw
// do (backend.Segment.RefuseHost). It refused class E (240.0.0.0/4) as "not
// a unicast IPv4 address", which Linux sends to like any other and some
// clouds number hosts in, while vxlan programmed it; 0.0.0.0/8 is refused
// by all three.
func TestDesiredPublicIPClasses(t *testing.T) {
	b := testBackend(t)
	own := lease("10.244.1.0/24", "198.18.0.1", Type)
	got := b.desired(own, []subnet.Lease{
		lease("10.244.2.0/24", "240.0.0.2", Type),
		lease("10.244.3.0/24", "255.255.255.254", Type),
		lease("10.244.4.0/24", "0.1.2.3", Type),
	}, testSegment())
	want := []entry{
		{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("240.0.0.2:8285")},
		{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParseAddrPort("255.255.255.254:8285")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("desired\n got %v\nwant %v", got, want)
	}
	var res backend.Result
	b.skips.Report(&res)
	want2 := []backend.SkippedLease{{Key: "10.244.4.0-24", Reason: `public IP 0.1.2.3 lies in 0.0.0.0/8, "this network", a source address only`}}
	if fmt.Sprint(res.SkippedLeases) != fmt.Sprint(want2) {
		t.Fatalf("skipped %q, want %q", res.SkippedLeases, want2)
	}
}

// TestSamePublicIP: two leases at one public IP (two hosts behind one NAT
// address, or a host that moved while its old lease lives) both get an
// entry, and datagrams from that address are accepted with an inner source
// in either subnet, and in no other peer's.
func TestSamePublicIP(t *testing.T) {
	b := testBackend(t)
	own := lease("10.244.1.0/24", "198.18.0.1", Type)
	es := b.desired(own, []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2", Type),
		lease("10.244.3.0/24", "198.18.0.3", Type),
		lease("10.244.7.0/24", "198.18.0.2", ""),
	}, testSegment())
	if len(es) != 3 {
		t.Fatalf("entries %v, want one for each of the 3 leases", es)
	}
	tbl := newTable(own.Subnet, es)
	from := be32(netip.MustParseAddr("198.18.0.2"))
	for _, tc := range []struct {
		src  string
		want verdict
	}{
		{"10.244.2.5", pass},
		{"10.244.7.5", pass},
		{"198.18.0.2", pass},
		{"10.244.3.5", dropSpoofed},
	} {
		if _, v := tbl.accept(from, ipPacket(tc.src, "10.244.1.9", 6, 64, nil)); v != tc.want {
			t.Errorf("from 198.18.0.2, inner source %s: %v, want %v", tc.src, v, tc.want)
		}
	}
	for _, dst := range []string{"10.244.2.5", "10.244.7.5"} {
		if p, _, v := route(tbl, ipPacket("10.244.1.9", dst, 6, 64, nil)); v != pass || p.Dst != netip.MustParseAddrPort("198.18.0.2:8285") {
			t.Errorf("to %s: %v, want sent to 198.18.0.2:8285", dst, v)
		}
	}
}
