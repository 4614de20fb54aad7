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
