package backend

import "github.com/vishvananda/netlink"

// RouteBuf keeps the slice of a pass's main-table routes (AppendPassRoutes)
// for the next pass to read its own into: an unchanged pass then allocates
// for the routes it keeps, not for the slice too. It belongs to the
// goroutine of the passes (Reconcile's).
//
// The routes given back are cleared: each route's addresses are its own
// (AppendPassRoutes allocates them for it), so once nothing holds the
// routes or a part of their slice past the pass, as no backend does (each
// makes Routes, Segments and maps of values out of them), no pass reads
// another's routes. A holder that broke this would read zero routes, and
// then the next pass's.
type RouteBuf struct{ rs []netlink.Route }

// Take returns an empty slice with the room of the routes last given back
// (Put), and keeps none until the next Put: a pass that fails before it
// gives its routes back leaves the next one to allocate.
func (b *RouteBuf) Take() []netlink.Route {
	rs := b.rs[:0]
	b.rs = nil
	return rs
}

// Put gives back rs, the slice of a pass's routes Take's slice became, once
// the pass is done with them. Room for more than twice as many routes and
// 64 more is not kept: a table that shrank that much leaves the next pass
// to allocate for what it now holds.
func (b *RouteBuf) Put(rs []netlink.Route) {
	clear(rs[:cap(rs)])
	if cap(rs) > 2*len(rs)+64 {
		b.rs = nil
		return
	}
	b.rs = rs[:0]
}
