package backend_test

import (
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestPassIgnoresForeignMultipath: a routing daemon's multipath routes
// (ECMP over two routers, as bird and FRR install them), which a pass
// reads and does not keep, cost PassRoutes no allocation, as its other
// routes do (TestPassIgnoresForeignRoutes): over 10 runs, 5000 of them
// added 0.35 bytes a route, 1.8 kB in all for the dump's datagrams
// (unix.Recvfrom's address of each sender), so an allocation per route, 8
// bytes at least, fails it. They cost 216 bytes a route until parseRoute
// read their next hops without a netlink.NexthopInfo, moved to the heap
// (96 bytes a next hop), and kept no slice of their RTA_MULTIPATH values
// (24 bytes).
func TestPassIgnoresForeignMultipath(t *testing.T) {
	const routes = 5000
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	network := netip.MustParsePrefix("10.244.0.0/16")
	// What a pass allocates, the least of 3: the first pass after a
	// change may meet a garbage collection's work.
	pass := func() uint64 {
		least := ^uint64(0)
		for range 3 {
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			rs, err := backend.PassRoutes(ns.Handle, ext.Attrs().Index, network)
			runtime.ReadMemStats(&m1)
			if err != nil {
				t.Fatal(err)
			}
			if len(rs) != 1 {
				t.Fatalf("PassRoutes kept %d routes, want ext0's on-link route alone", len(rs))
			}
			least = min(least, m1.TotalAlloc-m0.TotalAlloc)
		}
		return least
	}
	bare := pass()
	for i := range routes {
		dst := netip.AddrFrom4([4]byte{198, 18, byte(128 + i>>8), byte(i)})
		if err := ns.Handle.RouteAdd(&netlink.Route{Dst: backend.IPNet(netip.PrefixFrom(dst, 32)), Protocol: unix.RTPROT_BIRD,
			MultiPath: []*netlink.NexthopInfo{
				{LinkIndex: ext.Attrs().Index, Gw: net.IPv4(198, 18, 0, 250)},
				{LinkIndex: ext.Attrs().Index, Gw: net.IPv4(198, 18, 0, 251)},
			}}); err != nil {
			t.Fatalf("add %s: %v", dst, err)
		}
	}
	loaded := pass()
	perRoute := (float64(loaded) - float64(bare)) / routes
	t.Logf("a pass allocated %d bytes with no multipath route, %d with %d: %.2f bytes per multipath route", bare, loaded, routes, perRoute)
	if perRoute > 1 {
		t.Errorf("a pass allocated %.2f bytes per foreign multipath route (%d routes); want under 1: it allocates for routes it does not keep", perRoute, routes)
	}
}
