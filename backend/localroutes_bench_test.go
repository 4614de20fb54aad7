package backend_test

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
)

// BenchmarkLocalRoutes measures what a pass pays to read the local table
// (LocalRoutes) beside its read of the main table (PassRoutes), one after
// the other in each iteration, on a host with n peers' routes in the main
// table (routes=N: the kernel keeps the two tables in one tree until a
// policy rule is added, so a dump of either walks both) and on one with a
// kube-proxy's n service addresses (addrs=N: one local route of the
// kernel's each, which LocalRoutes passes over by their header). Neither
// has a route LocalRoutes keeps.
func BenchmarkLocalRoutes(b *testing.B) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, tc := range []struct {
		name string
		fill func(b *testing.B, ns *nstest.NS, ext netlink.Link)
	}{
		{"routes=5000", func(b *testing.B, ns *nstest.NS, ext netlink.Link) {
			for i := range 5000 {
				dst := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte((i + 2) * 8 >> 8), byte((i + 2) * 8)}), 29)
				if err := ns.Handle.RouteAdd(&netlink.Route{Dst: backend.IPNet(dst), Gw: net.IPv4(198, 18, 0, 2), LinkIndex: ext.Attrs().Index,
					Protocol: backend.RouteProtocol}); err != nil {
					b.Fatalf("add %s: %v", dst, err)
				}
			}
		}},
		{"addrs=20000", func(b *testing.B, ns *nstest.NS, _ netlink.Link) {
			ipvs := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}, PeerName: "kube-ipvs0p"}
			if err := ns.Handle.LinkAdd(ipvs); err != nil {
				b.Fatal(err)
			}
			for i := range 20000 {
				a := netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)}), 32)
				if err := ns.Handle.AddrAdd(ipvs, &netlink.Addr{IPNet: backend.IPNet(a)}); err != nil {
					b.Fatalf("add %s: %v", a, err)
				}
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
			tc.fill(b, ns, ext)
			compare(b, "pass", "local",
				func() error { _, err := backend.PassRoutes(ns.Handle, ext.Attrs().Index, network); return err },
				func() error {
					rs, err := backend.LocalRoutes(ns.Handle, network)
					if err == nil && len(rs) != 0 {
						err = fmt.Errorf("LocalRoutes kept %v, want none", rs)
					}
					return err
				})
		})
	}
}
