package backend_test

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkServiceAddrs measures what a vxlan pass pays to read the
// addresses and the main table of a Kubernetes node whose kube-proxy (IPVS
// mode) holds n service addresses on kube-ipvs0, one after the other on the
// same host in each iteration:
//
//   - before: netlink's calls as a pass made them until the fix: every
//     address of the host (ReadSegment), the vxlan device's and the
//     external interface's (EnsureSubnetAddr; the agent's check of the
//     interface) through AddrList, which dumps all and filters in our
//     process, and the routes of every table (PassRoutes), filtered by
//     table in our process;
//   - after: ReadSegment, ListAddrs of the two links, PassRoutes.
//
// It reports the time and the bytes allocated of each per pass, and their
// ratios (before/after).
func BenchmarkServiceAddrs(b *testing.B) {
	for _, n := range []int{20000, 50000} {
		b.Run(fmt.Sprintf("addrs=%d", n), func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
			dev := ns.AddVeth(b, "vtep0", "vtep0p", netip.MustParsePrefix("10.244.1.0/32"))
			addServiceAddrs(b, ns, "kube-ipvs0", n)
			network := netip.MustParsePrefix("10.244.0.0/16")
			idx := ext.Attrs().Index
			before := func() error {
				keep := backend.PassRoute(idx, network)
				var rs []netlink.Route
				if err := ns.Handle.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE,
					func(r netlink.Route) bool {
						if keep(&r) {
							rs = append(rs, r)
						}
						return true
					}); err != nil {
					return err
				}
				all, err := ns.Handle.AddrList(nil, netlink.FAMILY_V4)
				if err != nil {
					return err
				}
				local := map[netip.Addr]string{}
				for _, a := range all {
					if p, ok := backend.PrefixFromIPNet(a.IPNet); ok {
						local[p.Addr()] = a.Label
					}
				}
				for _, l := range []netlink.Link{dev, ext} {
					if _, err := ns.Handle.AddrList(l, netlink.FAMILY_V4); err != nil {
						return err
					}
				}
				return nil
			}
			after := func() error {
				rs, err := backend.PassRoutes(ns.Handle, idx, network)
				if err != nil {
					return err
				}
				if _, err := backend.ReadSegment(ns.Handle, idx, "ext0", rs); err != nil {
					return err
				}
				for _, l := range []netlink.Link{dev, ext} {
					if _, err := backend.ListAddrs(ns.Handle, l, netlink.FAMILY_V4); err != nil {
						return err
					}
				}
				return nil
			}
			compare(b, "before", "after", before, after)
		})
	}
}

// BenchmarkSegmentReader measures what a pass pays to read the segment on a
// Kubernetes node whose kube-proxy (IPVS mode) holds n service addresses on
// kube-ipvs0, while one of them is replaced by another (a Service gone,
// another made) before each read, one after the other in each iteration:
//
//   - dump: ReadSegment, which dumps every address of the host (each pass
//     until SegmentReader);
//   - events: SegmentReader.Read, subscribed: the address events since the
//     last read, and a dump of the external interface's addresses.
//
// Both include the replacement (two address writes, writes-ms/pass alone)
// and PassRoutes. It reports the time and the bytes allocated of each per
// pass, and their ratios (dump/events).
func BenchmarkSegmentReader(b *testing.B) {
	for _, n := range []int{20000, 50000} {
		b.Run(fmt.Sprintf("addrs=%d", n), func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
			ipvs := addServiceAddrs(b, ns, "kube-ipvs0", n)
			network := netip.MustParsePrefix("10.244.0.0/16")
			idx := ext.Attrs().Index
			var r backend.SegmentReader
			b.Cleanup(r.Subscribe(ns.NsHandle))
			// replace deletes the i-th service address and adds it back
			// as 198.20.x.y, or the reverse, by turns.
			i := 0
			replace := func() error {
				a := netip.AddrFrom4([4]byte{198, 19, byte(i % n >> 8), byte(i % n)})
				moved := netip.AddrFrom4([4]byte{198, 20, byte(i % n >> 8), byte(i % n)})
				if i/n%2 == 1 {
					a, moved = moved, a
				}
				i++
				return errors.Join(ns.Handle.AddrDel(ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}),
					ns.Handle.AddrAdd(ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(moved, 32))}))
			}
			read := func(read func(*netlink.Handle, int, string, []netlink.Route) (*backend.Segment, error)) func() error {
				return func() error {
					if err := replace(); err != nil {
						return err
					}
					rs, err := backend.PassRoutes(ns.Handle, idx, network)
					if err != nil {
						return err
					}
					_, err = read(ns.Handle, idx, "ext0", rs)
					return err
				}
			}
			if err := read(r.Read)(); err != nil { // the first read dumps
				b.Fatal(err)
			}
			// What the replacements cost alone: the kernel walks the
			// link's address list for each write.
			const writes = 20
			start := time.Now()
			for range writes {
				if err := replace(); err != nil {
					b.Fatal(err)
				}
			}
			writesMS := float64(time.Since(start).Microseconds()) / writes / 1e3
			if err := read(r.Read)(); err != nil {
				b.Fatal(err)
			}
			compare(b, "dump", "events", read(backend.ReadSegment), read(r.Read))
			b.ReportMetric(writesMS, "writes-ms/pass") // after b.Loop, which clears what was reported before it
		})
	}
}
