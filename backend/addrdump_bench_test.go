package backend_test

import (
	"fmt"
	"net/netip"
	"testing"

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
