package backend

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func mainRoute(dst string, proto netlink.RouteProtocol, typ int, gw string, dev int) netlink.Route {
	r := netlink.Route{Dst: IPNet(netip.MustParsePrefix(dst)), Protocol: proto, Type: typ, LinkIndex: dev, Table: unix.RT_TABLE_MAIN}
	if gw != "" {
		r.Gw = netip.MustParseAddr(gw).AsSlice()
	}
	return r
}

// TestShadowLog: another program's route inside a peer's subnet and longer
// than it (a blackhole left by Calico, a static /25) is logged once, with
// the peer's subnet, whatever the number of passes that find it, and once
// more when a pass no longer finds it. Routes that take nothing from a peer
// are not: ours, the kernel's, one to a subnet no peer route holds, one of
// the peer's length or shorter (the peer's route is the longer prefix), one
// in another table, one the backend counts as its own (mine).
func TestShadowLog(t *testing.T) {
	var lines []string
	s := NewShadowLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST},
		{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("198.18.0.3"), LinkIndex: 2, Type: unix.RTN_UNICAST},
	}
	other := mainRoute("10.244.3.0/25", unix.RTPROT_STATIC, unix.RTN_UNICAST, "", 9)
	other.Table = 100
	harmless := []netlink.Route{
		mainRoute("10.244.2.0/24", RouteProtocol, unix.RTN_UNICAST, "198.18.0.2", 2),
		mainRoute("10.244.3.0/24", RouteProtocol, unix.RTN_UNICAST, "198.18.0.3", 2),
		mainRoute("10.244.1.0/24", unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 5),
		mainRoute("10.244.2.7/32", unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 6),
		mainRoute("10.244.9.0/26", unix.RTPROT_STATIC, unix.RTN_BLACKHOLE, "", 0),
		mainRoute("10.244.3.0/24", unix.RTPROT_BOOT, unix.RTN_UNICAST, "198.18.0.9", 2),
		mainRoute("10.244.2.0/23", unix.RTPROT_BOOT, unix.RTN_UNICAST, "198.18.0.9", 2),
		mainRoute("10.244.2.128/25", unix.RTPROT_BOOT, unix.RTN_UNICAST, "", 7),
		other,
	}
	mine := func(r *netlink.Route) bool { return r.LinkIndex == 7 }
	s.Check(harmless, want, ShadowHost{}, mine)
	if len(lines) != 0 {
		t.Fatalf("routes that take nothing from a peer logged:\n%s", strings.Join(lines, "\n"))
	}
	shadowing := append(harmless,
		mainRoute("10.244.2.64/26", 12, unix.RTN_BLACKHOLE, "", 0), // Calico's block, proto bird
		mainRoute("10.244.3.0/25", unix.RTPROT_BOOT, unix.RTN_UNICAST, "198.18.0.2", 2))
	for range 3 {
		s.Check(shadowing, want, ShadowHost{}, mine)
	}
	if len(lines) != 2 {
		t.Fatalf("%d lines for two routes found by three passes, want 2:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	for _, w := range []string{
		`"msg"="another route takes part of a peer's subnet" "route"="blackhole 10.244.2.64/26 proto bird" "peerSubnet"="10.244.2.0/24"`,
		`"msg"="another route takes part of a peer's subnet" "route"="10.244.3.0/25 via 198.18.0.2 dev#2 proto boot" "peerSubnet"="10.244.3.0/24"`,
	} {
		if !strings.Contains(strings.Join(lines, "\n"), w) {
			t.Errorf("no line with %s in:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	lines = nil
	s.Check(append(harmless, shadowing[len(shadowing)-1]), want, ShadowHost{}, mine)
	s.Check(append(harmless, shadowing[len(shadowing)-1]), want, ShadowHost{}, mine)
	if len(lines) != 1 || !strings.Contains(lines[0], `"msg"="a route that took part of a peer's subnet no longer does" "route"="blackhole 10.244.2.64/26 proto bird"`) {
		t.Fatalf("after the blackhole route went, want one line saying so, got:\n%s", strings.Join(lines, "\n"))
	}
}

// TestShadowLogOverlappingPeers: of two peer routes holding the route (a
// /22 and a /24 in it, only bad data makes them), the line names the
// longer, whichever order the pass wants them in, so that a pass that lists
// them the other way round says nothing new.
func TestShadowLogOverlappingPeers(t *testing.T) {
	var lines []string
	s := NewShadowLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.4.0/22"), Gw: netip.MustParseAddr("198.18.0.4"), LinkIndex: 2, Type: unix.RTN_UNICAST},
		{Dst: netip.MustParsePrefix("10.244.5.0/24"), Gw: netip.MustParseAddr("198.18.0.5"), LinkIndex: 2, Type: unix.RTN_UNICAST},
	}
	main := []netlink.Route{mainRoute("10.244.5.0/26", unix.RTPROT_STATIC, unix.RTN_BLACKHOLE, "", 0)}
	s.Check(main, want, ShadowHost{}, nil)
	slices.Reverse(want)
	s.Check(main, want, ShadowHost{}, nil)
	if len(lines) != 1 || !strings.Contains(lines[0], `"route"="blackhole 10.244.5.0/26 proto static" "peerSubnet"="10.244.5.0/24"`) {
		t.Fatalf("want one line naming 10.244.5.0/24, got:\n%s", strings.Join(lines, "\n"))
	}
}

// levelCount counts the lines a ShadowLog logs at -v=0 and at -v=2, and
// keeps the last at -v=0.
type levelCount struct {
	v0, v2 int
	last   string
}

// shadowLog is a ShadowLog logging at up to -v=2 into c.
func (c *levelCount) shadowLog() *ShadowLog {
	return NewShadowLog(funcr.New(func(_, args string) {
		if strings.Contains(args, `"level"=0`) {
			c.v0++
			c.last = args
		} else {
			c.v2++
		}
	}, funcr.Options{Verbosity: 2}))
}

// TestShadowLogBounded: a pass that finds many such routes at once (a
// routing daemon's per-pod /32s) logs shadowLines of them and a count of
// the others, which go to -v=2.
func TestShadowLogBounded(t *testing.T) {
	var c levelCount
	s := c.shadowLog()
	want := []Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST}}
	var main []netlink.Route
	for i := range 200 {
		main = append(main, mainRoute(fmt.Sprintf("10.244.2.%d/32", i), 12, unix.RTN_UNICAST, "198.18.0.9", 2))
	}
	s.Check(main, want, ShadowHost{}, nil)
	if c.v0 != shadowLines+1 || c.v2 != 200-shadowLines || !strings.Contains(c.last, `"count"=190`) {
		t.Errorf("%d lines at -v=0 (the last %s) and %d at -v=2; want %d, the last counting 190, and 190", c.v0, c.last, c.v2, shadowLines+1)
	}
}

// BenchmarkShadowLogNone: a pass whose routes are ours and the kernel's
// for this host's subnet (cni0's) and the external interface's costs
// nothing.
func BenchmarkShadowLogNone(b *testing.B) {
	s := NewShadowLog(funcr.New(func(_, _ string) {}, funcr.Options{}))
	host := ShadowHost{Network: netip.MustParsePrefix("10.0.0.0/8"), Subnet: netip.MustParsePrefix("10.200.0.0/24"),
		Labels: map[netip.Addr]string{netip.MustParseAddr("10.200.0.1"): "cni0", netip.MustParseAddr("198.18.0.1"): "eth0"}}
	main := []netlink.Route{
		mainRoute("10.200.0.0/24", unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 5),
		mainRoute("198.18.0.0/24", unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 2),
	}
	main[0].Src, main[1].Src = netip.MustParseAddr("10.200.0.1").AsSlice(), netip.MustParseAddr("198.18.0.1").AsSlice()
	var want []Route
	for i := range 5000 {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		main = append(main, mainRoute(sn.String(), RouteProtocol, unix.RTN_UNICAST, "198.18.0.2", 2))
		want = append(want, Route{Dst: sn, Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST})
	}
	b.ReportAllocs()
	for b.Loop() {
		s.Check(main, want, host, nil)
	}
}

// TestShadowLogStrays: a connected route (proto kernel) into the cluster
// network outside this host's subnet, as a docker0 left at a subnet this
// host leased before makes, is logged once with the interface, the address
// and this host's subnet, whether or not a peer holds that subnet, however
// many passes find it; and once when it is gone. Not logged: this host's
// subnet's route (cni0), one overlapping it (an address of ours with a
// shorter length), routes outside the network or shorter than it, one with
// no source address, which no address made, and all of them when the pass
// knows no network or subnet.
func TestShadowLogStrays(t *testing.T) {
	var lines []string
	s := NewShadowLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	kernel := func(dst, src string, dev int) netlink.Route {
		r := mainRoute(dst, unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", dev)
		if src != "" {
			r.Src = netip.MustParseAddr(src).AsSlice()
		}
		return r
	}
	host := ShadowHost{
		Network: netip.MustParsePrefix("10.244.0.0/16"),
		Subnet:  netip.MustParsePrefix("10.244.1.0/24"),
		Labels: map[netip.Addr]string{netip.MustParseAddr("10.244.1.1"): "cni0", netip.MustParseAddr("198.18.0.1"): "eth0",
			netip.MustParseAddr("10.244.1.9"): "br1", netip.MustParseAddr("10.244.42.1"): "docker0", netip.MustParseAddr("10.244.2.1"): "docker0",
			netip.MustParseAddr("198.19.9.1"): "tun0"},
	}
	want := []Route{{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("198.18.0.3"), LinkIndex: 2, Type: unix.RTN_UNICAST}}
	harmless := []netlink.Route{
		mainRoute("10.244.3.0/24", RouteProtocol, unix.RTN_UNICAST, "198.18.0.3", 2),
		kernel("10.244.1.0/24", "10.244.1.1", 5),
		kernel("10.244.0.0/16", "10.244.1.9", 8),
		kernel("198.18.0.0/24", "198.18.0.1", 2),
		kernel("10.0.0.0/8", "10.1.0.1", 9),
		kernel("10.244.7.0/24", "", 9),
	}
	strays := append(slices.Clip(harmless),
		kernel("10.244.42.0/24", "10.244.42.1", 6), // no peer holds it
		kernel("10.244.2.0/24", "10.244.2.1", 6),   // a peer skipped for it (Segment.LocalIn)
		kernel("10.244.9.0/24", "198.19.9.1", 7))   // a point-to-point address's peer network
	s.Check(strays, want, ShadowHost{}, nil)
	s.Check(harmless, want, host, nil)
	if len(lines) != 0 {
		t.Fatalf("routes not into another subnet logged, or with no network known:\n%s", strings.Join(lines, "\n"))
	}
	for range 3 {
		s.Check(strays, want, host, nil)
	}
	const msg = `"msg"="an address of this host routes another subnet of the cluster network to its interface" `
	for _, w := range []string{
		msg + `"iface"="docker0" "address"="10.244.42.1/24" "route"="10.244.42.0/24" "ownSubnet"="10.244.1.0/24"`,
		msg + `"iface"="docker0" "address"="10.244.2.1/24" "route"="10.244.2.0/24" "ownSubnet"="10.244.1.0/24"`,
		msg + `"iface"="tun0" "address"="198.19.9.1" "route"="10.244.9.0/24" "ownSubnet"="10.244.1.0/24"`,
	} {
		if !strings.Contains(strings.Join(lines, "\n"), w) {
			t.Errorf("no line with %s in:\n%s", w, strings.Join(lines, "\n"))
		}
	}
	if len(lines) != 3 || !strings.Contains(lines[0], "(ip addr del ") {
		t.Fatalf("%d lines for three routes found by three passes, want 3, each with the command deleting the address:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	lines = nil
	s.Check(strays[:len(strays)-1], want, host, nil)
	s.Check(strays[:len(strays)-1], want, host, nil)
	const gone = `"msg"="an address of this host no longer routes another subnet of the cluster network" "iface"="tun0" "address"="198.19.9.1" "route"="10.244.9.0/24"`
	if len(lines) != 1 || !strings.Contains(lines[0], gone) {
		t.Fatalf("after tun0's route went, want one line with %s, got:\n%s", gone, strings.Join(lines, "\n"))
	}
}

// TestShadowLogStraysBounded: a pass that finds more such routes than
// shadowLines (a host with a bridge per old subnet) logs shadowLines of them
// and a count of the others, which go to -v=2.
func TestShadowLogStraysBounded(t *testing.T) {
	var c levelCount
	s := c.shadowLog()
	host := ShadowHost{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	var main []netlink.Route
	for i := range 30 {
		r := mainRoute(fmt.Sprintf("10.244.%d.0/24", 100+i), unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 10+i)
		r.Src = netip.AddrFrom4([4]byte{10, 244, byte(100 + i), 1}).AsSlice()
		main = append(main, r)
	}
	s.Check(main, nil, host, nil)
	if c.v0 != shadowLines+1 || c.v2 != 30-shadowLines || !strings.Contains(c.last, `"msg"="more addresses of this host route another subnet of the cluster network; each is logged at -v=2" "count"=20`) {
		t.Errorf("%d lines at -v=0 (the last %s) and %d at -v=2; want %d, the last counting 20, and 20", c.v0, c.last, c.v2, shadowLines+1)
	}
}

// TestShadowLogStraysOutsidePool: a Network that also holds the hosts' own
// network, leases taken only from SubnetMin to SubnetMax (flannel's
// documented use of SubnetMin): the connected route of a NIC's address
// outside that range takes nothing from any host and is not reported,
// while a bridge's address inside it still is. Before, the NIC's was
// reported with the advice to delete its address.
func TestShadowLogStraysOutsidePool(t *testing.T) {
	var lines []string
	s := NewShadowLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
	kernel := func(dst, src string, dev int) netlink.Route {
		r := mainRoute(dst, unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", dev)
		r.Src = netip.MustParseAddr(src).AsSlice()
		return r
	}
	host := ShadowHost{
		Network:   netip.MustParsePrefix("10.0.0.0/8"),
		Subnet:    netip.MustParsePrefix("10.10.1.0/24"),
		SubnetMin: netip.MustParseAddr("10.10.0.0"),
		SubnetMax: netip.MustParseAddr("10.99.0.0"),
		SubnetLen: 24,
		Labels: map[netip.Addr]string{netip.MustParseAddr("10.0.1.5"): "eth1", netip.MustParseAddr("10.99.0.1"): "docker0",
			netip.MustParseAddr("10.99.1.1"): "br2"},
	}
	main := []netlink.Route{
		kernel("10.0.1.0/24", "10.0.1.5", 3),   // below SubnetMin
		kernel("10.99.1.0/24", "10.99.1.1", 5), // past SubnetMax's subnet
		kernel("10.99.0.0/24", "10.99.0.1", 4), // SubnetMax's subnet
	}
	s.Check(main, nil, host, nil)
	if len(lines) != 1 || !strings.Contains(lines[0], `"iface"="docker0" "address"="10.99.0.1/24" "route"="10.99.0.0/24"`) {
		t.Fatalf("want one line, for docker0 in SubnetMax's subnet, got %d:\n%s", len(lines), strings.Join(lines, "\n"))
	}
}
