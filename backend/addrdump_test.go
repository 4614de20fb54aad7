package backend_test

import (
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// addServiceAddrs puts n /32s of 198.19.0.0/16 on a new link named name,
// as kube-proxy in IPVS mode puts a Service's cluster IP on kube-ipvs0 (a
// veth here: the test kernel may lack dummy).
func addServiceAddrs(t testing.TB, ns *nstest.NS, name string, n int) netlink.Link {
	t.Helper()
	l := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := ns.Handle.LinkAdd(l); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		if err := ns.Handle.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	return l
}

// printAddrs prints addrs one a line, sorted, as netlink returns them.
func printAddrs(addrs []netlink.Addr) string {
	var lines []string
	for _, a := range addrs {
		lines = append(lines, fmt.Sprintf("%s peer=%v brd=%v label=%q flags=%#x scope=%d link=%d",
			a.IPNet, a.Peer, a.Broadcast, a.Label, a.Flags, a.Scope, a.LinkIndex))
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestListAddrsOfLink: the addresses of one link are listed as netlink's
// AddrList lists them (secondary, point-to-point, labelled, noprefixroute,
// IPv6), and those of other links cost nothing: kube-proxy's service
// addresses on kube-ipvs0 were each parsed into netlink's Addr, about 1 kB,
// for every list of the external interface's or the vxlan device's
// addresses (two or three a pass) only to be dropped.
func TestListAddrsOfLink(t *testing.T) {
	ns := nstest.New(t)
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	if err := ns.Sysctl("net.ipv6.conf.ext0.disable_ipv6", "0"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []*netlink.Addr{
		{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.7/24"))}, // secondary
		{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.5.1/32")), Peer: backend.IPNet(netip.MustParsePrefix("198.18.6.0/24")), Label: "ext0:p2p"},
		{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.9.1/24")), Flags: unix.IFA_F_NOPREFIXROUTE},
		{IPNet: backend.IPNet(netip.MustParsePrefix("2001:db8::1/64")), Flags: unix.IFA_F_NODAD},
	} {
		if err := ns.Handle.AddrAdd(ext, a); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	const n = 5000
	addServiceAddrs(t, ns, "kube-ipvs0", n)
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		got, err := backend.ListAddrs(ns.Handle, ext, family)
		if err != nil {
			t.Fatal(err)
		}
		want, err := ns.Handle.AddrList(ext, family)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := printAddrs(got), printAddrs(want); g != w {
			t.Errorf("ListAddrs(ext0, family %d):\n%s\nwant (netlink's AddrList):\n%s", family, g, w)
		}
	}

	garbage := func(list func() ([]netlink.Addr, error)) uint64 {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if _, err := list(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	ours := garbage(func() ([]netlink.Addr, error) { return backend.ListAddrs(ns.Handle, ext, netlink.FAMILY_V4) })
	all := garbage(func() ([]netlink.Addr, error) { return ns.Handle.AddrList(nil, netlink.FAMILY_V4) })
	perAddr := float64(ours) / n
	t.Logf("listing ext0's addresses allocated %d bytes with %d service addresses on kube-ipvs0 (%.1f per address); listing all, %d", ours, n, perAddr, all)
	// 20 bytes an address leaves room for the one 64 kB receive buffer.
	if perAddr > 20 {
		t.Errorf("listing ext0's addresses allocated %.1f bytes per address of another link; want under 20: it parses them", perAddr)
	}
}
