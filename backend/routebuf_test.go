package backend_test

import (
	"net"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// TestRouteBuf: the slice given back is the one taken next, empty and with
// every route cleared, also those past its length (a dump tried again
// leaves some there); it is taken once; and room for far more routes than
// the pass read is not kept.
func TestRouteBuf(t *testing.T) {
	var b backend.RouteBuf
	if rs := b.Take(); len(rs) != 0 || cap(rs) != 0 {
		t.Fatalf("Take of a new RouteBuf: len %d cap %d, want an empty slice", len(rs), cap(rs))
	}
	rs := make([]netlink.Route, 0, 100)
	for range 100 {
		rs = append(rs, netlink.Route{LinkIndex: 7, Gw: net.IPv4(198, 18, 0, 2)})
	}
	whole := rs
	rs = rs[:60]
	b.Put(rs)
	for i, r := range whole {
		if r.LinkIndex != 0 || r.Gw != nil {
			t.Fatalf("route %d of the slice given back not cleared: %+v", i, r)
		}
	}
	got := b.Take()
	if len(got) != 0 || cap(got) != 100 || &got[:1][0] != &whole[0] {
		t.Fatalf("Take after Put: len %d cap %d, want the slice given back, empty", len(got), cap(got))
	}
	if again := b.Take(); cap(again) != 0 {
		t.Fatalf("a second Take before a Put: cap %d, want none", cap(again))
	}
	b.Put(got[:17]) // room for 100 > 2*17+64
	if left := b.Take(); cap(left) != 0 {
		t.Fatalf("Take after a Put of 17 routes in room for 100: cap %d, want none kept", cap(left))
	}
}
