package backend_test

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkPassRoutes measures what a pass pays to read the main table of a
// host with a routing daemon's routes (BGP: bird, FRR): MainRoutes, which
// holds the whole table (what vxlan and host-gw read before PassRoutes), and
// PassRoutes, which keeps the routes a pass can use, one after the other on
// the same table in each iteration. It reports the time and the bytes
// allocated of each per pass, and their ratios (main/pass). The routes are
// prefixes of 198.18.32.0/19 to 198.18.128.0/17 through a router on
// ext0's segment.
func BenchmarkPassRoutes(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("routes=%d", n), func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
			addRouterRoutes(b, ns, ext, n)
			network := netip.MustParsePrefix("10.244.0.0/16")
			compare(b, "main", "pass",
				func() error { _, err := backend.MainRoutes(ns.Handle); return err },
				func() error { _, err := backend.PassRoutes(ns.Handle, ext.Attrs().Index, network); return err })
		})
	}
}

// compare runs old and new one after the other in each iteration and
// reports, per pass, the time and the bytes allocated of each and their
// ratios (old/new), named by oldName and newName.
func compare(b *testing.B, oldName, newName string, old, new func() error) {
	b.Helper()
	measure := func(pass func() error) (time.Duration, uint64) {
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		if err := pass(); err != nil {
			b.Fatal(err)
		}
		took := time.Since(start)
		runtime.ReadMemStats(&m1)
		return took, m1.TotalAlloc - m0.TotalAlloc
	}
	var oldT, newT time.Duration
	var oldB, newB uint64
	for b.Loop() {
		t, a := measure(old)
		oldT, oldB = oldT+t, oldB+a
		t, a = measure(new)
		newT, newB = newT+t, newB+a
	}
	ops := float64(b.N)
	b.ReportMetric(float64(oldT.Microseconds())/ops/1e3, oldName+"-ms/pass")
	b.ReportMetric(float64(newT.Microseconds())/ops/1e3, newName+"-ms/pass")
	b.ReportMetric(float64(oldT)/float64(newT), "time-"+oldName+"/"+newName)
	b.ReportMetric(float64(oldB)/ops/1e6, oldName+"-MB/pass")
	b.ReportMetric(float64(newB)/ops/1e6, newName+"-MB/pass")
	b.ReportMetric(float64(oldB)/float64(newB), "alloc-"+oldName+"/"+newName)
}

// addRouterRoutes adds n routes through a router on ext's segment, with
// bird's protocol: the /32s of 198.18.128.0/17, 198.18.64.0/18 and
// 198.18.32.0/19, then their /31s, and so on (up to 114 000 routes).
func addRouterRoutes(b testing.TB, ns *nstest.NS, ext netlink.Link, n int) {
	b.Helper()
	gw := net.IPv4(198, 18, 0, 250)
	added := 0
	bases := []netip.Prefix{netip.MustParsePrefix("198.18.128.0/17"), netip.MustParsePrefix("198.18.64.0/18"), netip.MustParsePrefix("198.18.32.0/19")}
	for bits := 32; bits >= 17 && added < n; bits-- {
		for _, base := range bases {
			if bits < base.Bits() {
				continue
			}
			start := base.Addr().As4()
			first := uint32(start[0])<<24 | uint32(start[1])<<16 | uint32(start[2])<<8 | uint32(start[3])
			for i := uint32(0); i < 1<<(bits-base.Bits()) && added < n; i++ {
				v := first + i<<(32-bits)
				dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), bits)
				if err := ns.Handle.RouteAdd(&netlink.Route{Dst: backend.IPNet(dst), Gw: gw, LinkIndex: ext.Attrs().Index,
					Protocol: unix.RTPROT_BIRD}); err != nil {
					b.Fatalf("add %s: %v", dst, err)
				}
				added++
			}
		}
	}
	if added < n {
		b.Fatalf("only %d routes to add, want %d", added, n)
	}
}
