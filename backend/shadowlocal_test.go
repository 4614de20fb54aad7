package backend

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func localRoute(dst string, proto netlink.RouteProtocol, typ int) netlink.Route {
	r := mainRoute(dst, proto, typ, "", 1)
	r.Table = unix.RT_TABLE_LOCAL
	return r
}

// TestShadowLogLocalRoutes: which routes of the local table a pass names as
// taking part of a peer's subnet, and with which subnet. One as long as
// the route carrying a peer's subnet (the subnet's own, or udp's carrier
// for the network) or longer takes what it covers, whatever the tables'
// order: named with the longest subnet it overlaps, then the lowest. A
// shorter one takes it only where the kernel looks the local table up
// first (LocalWins): named then, not where the longer route wins, nor when
// no answer tells. Never named: the kernel's (an address's), throw routes,
// one inside this host's subnet, outside the network, over no peer's
// subnet, or of another table given as local.
func TestShadowLogLocalRoutes(t *testing.T) {
	network, own := netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("10.244.1.0/24")
	perPeer := []Route{
		{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("198.18.0.3"), LinkIndex: 2, Type: unix.RTN_UNICAST},
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST},
	}
	// Bad data: a peer's subnet overlapping ours, which the backends skip.
	overOwn := Route{Dst: netip.MustParsePrefix("10.244.1.0/25"), Gw: netip.MustParseAddr("198.18.0.9"), LinkIndex: 2, Type: unix.RTN_UNICAST}
	split := func(*netlink.Route, netip.Addr, netip.Prefix) (bool, bool) { return true, true }
	oneTree := func(*netlink.Route, netip.Addr, netip.Prefix) (bool, bool) { return false, true }
	unknown := func(*netlink.Route, netip.Addr, netip.Prefix) (bool, bool) { return false, false }
	inTable := func(r netlink.Route, table int) netlink.Route { r.Table = table; return r }
	for _, tc := range []struct {
		name    string
		route   netlink.Route
		carrier netip.Prefix
		wins    func(*netlink.Route, netip.Addr, netip.Prefix) (bool, bool)
		overOwn bool   // a peer's subnet overlaps ours too
		want    string // the line's route= and peerSubnet=, or "" for none
	}{
		{name: "AnyIP over a peer's subnet", route: localRoute("10.244.2.0/24", unix.RTPROT_BOOT, unix.RTN_LOCAL), wins: oneTree,
			want: `"route"="local 10.244.2.0/24 dev#1 table local proto boot" "peerSubnet"="10.244.2.0/24"`},
		{name: "inside a peer's subnet", route: localRoute("10.244.3.64/26", unix.RTPROT_STATIC, unix.RTN_LOCAL), wins: oneTree,
			want: `"route"="local 10.244.3.64/26 dev#1 table local proto static" "peerSubnet"="10.244.3.0/24"`},
		{name: "a broadcast route", route: localRoute("10.244.3.255/32", unix.RTPROT_STATIC, unix.RTN_BROADCAST), wins: oneTree,
			want: `"route"="broadcast 10.244.3.255/32 dev#1 table local proto static" "peerSubnet"="10.244.3.0/24"`},
		{name: "a unicast route", route: localRoute("10.244.3.0/24", unix.RTPROT_STATIC, unix.RTN_UNICAST), wins: oneTree,
			want: `"route"="10.244.3.0/24 dev#1 table local proto static" "peerSubnet"="10.244.3.0/24"`},
		{name: "shorter, tables apart", route: localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL), wins: split,
			want: `"route"="local 10.244.0.0/16 dev#1 table local proto boot" "peerSubnet"="10.244.2.0/24"`},
		{name: "shorter, one tree", route: localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL), wins: oneTree},
		{name: "shorter, not known", route: localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL), wins: unknown},
		{name: "shorter, nobody asked", route: localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL)},
		{name: "as long as the carrier", route: localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL), carrier: network, wins: oneTree,
			want: `"route"="local 10.244.0.0/16 dev#1 table local proto boot" "peerSubnet"="10.244.2.0/24"`},
		{name: "over two subnets, longer than the carrier", route: localRoute("10.244.2.0/23", unix.RTPROT_BOOT, unix.RTN_LOCAL), carrier: network, wins: oneTree,
			want: `"route"="local 10.244.2.0/23 dev#1 table local proto boot" "peerSubnet"="10.244.2.0/24"`},
		{name: "shorter than the carrier, tables apart", route: localRoute("10.0.0.0/8", unix.RTPROT_BOOT, unix.RTN_LOCAL), carrier: network, wins: split,
			want: `"route"="local 10.0.0.0/8 dev#1 table local proto boot" "peerSubnet"="10.244.2.0/24"`},
		{name: "shorter than the carrier, one tree", route: localRoute("10.0.0.0/8", unix.RTPROT_BOOT, unix.RTN_LOCAL), carrier: network, wins: oneTree},
		{name: "a blackhole", route: localRoute("10.244.2.128/25", unix.RTPROT_STATIC, unix.RTN_BLACKHOLE), wins: oneTree,
			want: `"route"="blackhole 10.244.2.128/25 dev#1 table local proto static" "peerSubnet"="10.244.2.0/24"`},
		{name: "the kernel's, of an address", route: localRoute("10.244.2.7/32", unix.RTPROT_KERNEL, unix.RTN_LOCAL), wins: split},
		{name: "a throw route", route: localRoute("10.244.2.0/24", unix.RTPROT_STATIC, unix.RTN_THROW), wins: split},
		{name: "inside this host's subnet", route: localRoute("10.244.1.0/26", unix.RTPROT_STATIC, unix.RTN_LOCAL), wins: split, overOwn: true},
		{name: "over no peer's subnet", route: localRoute("10.244.9.0/24", unix.RTPROT_STATIC, unix.RTN_LOCAL), wins: split},
		{name: "outside the network", route: localRoute("198.19.0.0/16", unix.RTPROT_STATIC, unix.RTN_LOCAL), wins: split},
		{name: "of another table", route: inTable(localRoute("10.244.2.0/24", unix.RTPROT_STATIC, unix.RTN_LOCAL), 100), wins: split},
		{name: "of the main table", route: inTable(localRoute("10.244.2.0/24", unix.RTPROT_STATIC, unix.RTN_LOCAL), unix.RT_TABLE_MAIN), wins: split},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var lines []string
			s := NewShadowLog(funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}))
			want := perPeer
			if tc.overOwn {
				want = append(slices.Clip(perPeer), overOwn)
			}
			if tc.carrier.IsValid() {
				carried := make([]Route, 0, len(want))
				for _, r := range want {
					carried = append(carried, Route{Dst: r.Dst})
				}
				want = carried
			}
			host := ShadowHost{Network: network, Subnet: own, Carrier: tc.carrier, Local: []netlink.Route{tc.route}, LocalWins: tc.wins}
			for range 2 {
				s.Check(nil, want, host, nil)
				want = slices.Clone(want)
				slices.Reverse(want) // which subnet is named does not hang on want's order
			}
			res := Result{}
			s.Report(&res)
			switch {
			case tc.want == "" && len(lines) != 0:
				t.Errorf("logged:\n%s\nwant nothing", strings.Join(lines, "\n"))
			case tc.want != "" && (len(lines) != 1 || !strings.Contains(lines[0], `"msg"="another route takes part of a peer's subnet" `+tc.want) ||
				!strings.Contains(lines[0], "table local")):
				t.Errorf("logged:\n%s\nwant one line with %s, its why naming the local table", strings.Join(lines, "\n"), tc.want)
			case tc.want != "" && len(res.Found.Shadowing) != 1:
				t.Errorf("Result.Found %+v, want the route", res.Found)
			}
			lines = nil
			host.Local = nil
			s.Check(nil, want, host, nil)
			if tc.want != "" && (len(lines) != 1 || !strings.Contains(lines[0], `"msg"="a route that took part of a peer's subnet no longer does"`)) {
				t.Errorf("with the route gone, logged:\n%s\nwant one line saying so", strings.Join(lines, "\n"))
			}
		})
	}
}

// TestShadowLogLocalOrderAskedOnce: the kernel's order of the tables is
// the host's, so a pass asks it once whatever the number of shorter routes
// of the local table, and asks past answers that tell nothing (another
// route holds the address asked) up to localProbes subnets, in the order
// longest, then lowest; the next pass asks again.
func TestShadowLogLocalOrderAskedOnce(t *testing.T) {
	var want []Route
	for i := range 10 {
		want = append(want, Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(10 + i), 0}), 24)})
	}
	var asked []string
	answers := []bool{false, false, true} // known on the third
	wins := func(r *netlink.Route, a netip.Addr, carry netip.Prefix) (bool, bool) {
		asked = append(asked, a.String()+" "+carry.String())
		known := answers[min(len(asked), len(answers))-1]
		return known, known
	}
	host := ShadowHost{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Local:     []netlink.Route{localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL), localRoute("10.244.8.0/21", unix.RTPROT_BOOT, unix.RTN_LOCAL)},
		LocalWins: wins}
	s := NewShadowLog(funcr.New(func(_, _ string) {}, funcr.Options{}))
	s.Check(nil, want, host, nil)
	if got := strings.Join(asked, ", "); got != "10.244.10.0 10.244.10.0/24, 10.244.11.0 10.244.11.0/24, 10.244.12.0 10.244.12.0/24" {
		t.Errorf("asked %s; want the first three subnets, once", got)
	}
	res := Result{}
	s.Report(&res)
	if len(res.Found.Shadowing) != 2 || res.Found.Shadowing[0].PeerSubnet != "10.244.10.0/24" || res.Found.Shadowing[1].PeerSubnet != "10.244.10.0/24" {
		t.Errorf("Result.Found %+v, want both routes, from 10.244.10.0/24", res.Found)
	}
	asked, answers = nil, []bool{false}
	s.Check(nil, want, host, nil)
	if len(asked) != localProbes {
		t.Errorf("with no answer telling, asked %d times, want %d: %v", len(asked), localProbes, asked)
	}
}

// TestShadowLogNestedLocalRoutes: with the tables apart, two nested routes
// of the local table, both shorter than the peers' subnets, are both named.
// The kernel (fibmatch, as RoutedBy asks it) answers for an address of the
// inner route's with the inner route, of the local table: that tells the
// tables are apart as well as an answer naming the outer route would, so
// the probes asked about the outer route are not spent for nothing.
func TestShadowLogNestedLocalRoutes(t *testing.T) {
	outer := localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL)
	inner := localRoute("10.244.8.0/21", unix.RTPROT_BOOT, unix.RTN_LOCAL)
	var want []Route
	for i := 8; i <= 12; i++ {
		want = append(want, Route{Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(i), 0}), 24),
			Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST})
	}
	var asked []string
	// The kernel with the tables apart: the local table first, longest
	// prefix in it, then the peers' routes.
	kernel := func(a netip.Addr) ([]netlink.Route, error) {
		asked = append(asked, a.String())
		for _, r := range []netlink.Route{inner, outer} {
			if dst, _ := PrefixFromIPNet(r.Dst); dst.Contains(a) {
				return []netlink.Route{r}, nil
			}
		}
		return nil, unix.ENETUNREACH
	}
	host := ShadowHost{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Local: []netlink.Route{outer, inner}, LocalWins: routedBy(kernel)}
	s := NewShadowLog(funcr.New(func(_, _ string) {}, funcr.Options{}))
	s.Check(nil, want, host, nil)
	res := Result{}
	s.Report(&res)
	var got []string
	for _, f := range res.Found.Shadowing {
		got = append(got, f.Route+" from "+f.PeerSubnet)
	}
	if w := []string{"local 10.244.0.0/16 dev#1 table local proto boot from 10.244.8.0/24",
		"local 10.244.8.0/21 dev#1 table local proto boot from 10.244.8.0/24"}; !slices.Equal(got, w) {
		t.Errorf("Result.Found %q (kernel asked about %v), want %q", got, asked, w)
	}
}

// TestLocalTableReadFails: a failed read of the local table fails nothing
// (it only says what takes from a peer): Routes gives the last read's
// routes (none before one), logs the error once until a read succeeds or
// fails otherwise, and the next pass reads again, subscribed or not.
func TestLocalTableReadFails(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	one := []netlink.Route{localRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_LOCAL)}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	var read error // the next read's answer
	reads := 0
	l := LocalTable{list: func(*netlink.Handle, netip.Prefix) ([]netlink.Route, error) {
		reads++
		if read != nil {
			return nil, read
		}
		return one, nil
	}}
	for i, pass := range []struct {
		subscribe bool  // Subscribed before the pass
		read      error // the read's answer
		routes    int
		reads     int    // the reads so far
		logged    string // the error logged by this pass, or ""
	}{
		{read: unix.ENOBUFS, routes: 0, reads: 1, logged: "no buffer space"},
		{read: nil, routes: 1, reads: 2},
		{read: unix.ENOBUFS, routes: 1, reads: 3, logged: "no buffer space"},
		{read: unix.ENOBUFS, routes: 1, reads: 4},
		{read: unix.EINTR, routes: 1, reads: 5, logged: "interrupted"},
		{subscribe: true, read: unix.EINTR, routes: 1, reads: 6},
		{read: nil, routes: 1, reads: 7}, // read again: the last failed
		{read: unix.ENOBUFS, routes: 1, reads: 7},
	} {
		if pass.subscribe {
			l.Subscribed()
		}
		lines, read = nil, pass.read
		rs := l.Routes(nil, network, log)
		switch {
		case len(rs) != pass.routes || reads != pass.reads:
			t.Errorf("pass %d (read %v): %d routes after %d reads, want %d after %d", i, pass.read, len(rs), reads, pass.routes, pass.reads)
		case pass.logged == "" && len(lines) != 0:
			t.Errorf("pass %d (read %v): logged %q, want nothing", i, pass.read, lines)
		case pass.logged != "" && (len(lines) != 1 || !strings.Contains(lines[0], pass.logged) || !strings.Contains(lines[0], "local table")):
			t.Errorf("pass %d (read %v): logged %q, want one line with %q", i, pass.read, lines, pass.logged)
		}
	}
}
