package backend

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// v0Lines is a ShadowLog logging at up to -v=2 whose lines at -v=0 are
// appended to *lines.
func v0Lines(lines *[]string) *ShadowLog {
	return NewShadowLog(funcr.New(func(_, args string) {
		if strings.Contains(args, `"level"=0`) {
			*lines = append(*lines, args)
		}
	}, funcr.Options{Verbosity: 2}))
}

// TestShadowLogSortedLines: of more than shadowLines findings new in one
// pass, those at -v=0 are the first by destination, in that order
// (10.244.2.2 before 10.244.2.10), and the lines saying they are gone come
// in that order too: the same for every agent and every run, whatever
// order the kernel lists the routes in. Before, Go's map order picked and
// ordered them.
func TestShadowLogSortedLines(t *testing.T) {
	want := []Route{{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST}}
	host := ShadowHost{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24")}
	var main []netlink.Route
	for i := range 30 {
		main = append(main, mainRoute(fmt.Sprintf("10.244.2.%d/32", i), 12, unix.RTN_UNICAST, "198.18.0.9", 2))
		r := mainRoute(fmt.Sprintf("10.244.%d.0/24", 100+i), unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 10+i)
		r.Src = netip.AddrFrom4([4]byte{10, 244, byte(100 + i), 1}).AsSlice()
		main = append(main, r)
	}
	var wantFound, wantGone []string
	for i := range shadowLines {
		wantFound = append(wantFound, fmt.Sprintf(`"route"="10.244.2.%d/32 via 198.18.0.9 dev#2 proto bird"`, i))
	}
	for i := range 30 {
		wantGone = append(wantGone, fmt.Sprintf(`"msg"="a route that took part of a peer's subnet no longer does" "route"="10.244.2.%d/32 `, i))
	}
	wantFound = append(wantFound, `"count"=20`)
	for i := range shadowLines {
		wantFound = append(wantFound, fmt.Sprintf(`"address"="10.244.%d.1/24"`, 100+i))
	}
	wantFound = append(wantFound, `"count"=20`)
	for i := range 30 {
		wantGone = append(wantGone, fmt.Sprintf(`"msg"="an address of this host no longer routes another subnet of the cluster network" "iface"="dev#%d"`, 10+i))
	}
	check := func(what string, lines, want []string) {
		t.Helper()
		if len(lines) != len(want) {
			t.Fatalf("%s: %d lines at -v=0, want %d:\n%s", what, len(lines), len(want), strings.Join(lines, "\n"))
		}
		for i := range want {
			if !strings.Contains(lines[i], want[i]) {
				t.Fatalf("%s: line %d is\n%s\nwant one with %s; all:\n%s", what, i, lines[i], want[i], strings.Join(lines, "\n"))
			}
		}
	}
	rnd := rand.New(rand.NewPCG(340, 1))
	for range 20 {
		var lines []string
		s := v0Lines(&lines)
		rnd.Shuffle(len(main), func(i, j int) { main[i], main[j] = main[j], main[i] })
		s.Check(main, want, host, nil)
		check("found", lines, wantFound)
		lines = nil
		s.Check(nil, want, host, nil)
		check("gone", lines, wantGone)
	}
}

// TestShadowLogReport: Report hands out what the last pass found, sorted
// by destination, as its lines said it: the same Findings while passes
// find the same, a new one when they find otherwise, empty once all is
// gone; one handed out is never changed.
func TestShadowLogReport(t *testing.T) {
	s := NewShadowLog(funcr.New(func(_, _ string) {}, funcr.Options{}))
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.2.0/24"), Gw: netip.MustParseAddr("198.18.0.2"), LinkIndex: 2, Type: unix.RTN_UNICAST},
		{Dst: netip.MustParsePrefix("10.244.3.0/24"), Gw: netip.MustParseAddr("198.18.0.3"), LinkIndex: 2, Type: unix.RTN_UNICAST},
	}
	host := ShadowHost{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.1.0/24"),
		Labels: map[netip.Addr]string{netip.MustParseAddr("10.244.42.1"): "docker0"}}
	docker0 := mainRoute("10.244.42.0/24", unix.RTPROT_KERNEL, unix.RTN_UNICAST, "", 6)
	docker0.Src = netip.MustParseAddr("10.244.42.1").AsSlice()
	main := []netlink.Route{
		mainRoute("10.244.3.0/25", unix.RTPROT_BOOT, unix.RTN_UNICAST, "198.18.0.2", 2),
		docker0,
		mainRoute("10.244.2.64/26", 12, unix.RTN_BLACKHOLE, "", 0),
		mainRoute("10.244.2.64/26", 12, unix.RTN_BLACKHOLE, "", 0), // listed twice: one finding
	}
	var res Result
	s.Report(&res)
	if res.Found == nil || len(res.Found.Shadowing)+len(res.Found.Strays) != 0 {
		t.Fatalf("before any pass, Report gives %+v, want empty Findings", res.Found)
	}
	s.Check(main, want, host, nil)
	s.Report(&res)
	first := res.Found
	wantFound := Findings{
		Shadowing: []Shadowing{{Route: "blackhole 10.244.2.64/26 proto bird", PeerSubnet: "10.244.2.0/24"}, {Route: "10.244.3.0/25 via 198.18.0.2 dev#2 proto boot", PeerSubnet: "10.244.3.0/24"}},
		Strays:    []Stray{{Iface: "docker0", Address: "10.244.42.1/24", Route: "10.244.42.0/24"}},
	}
	text := func(f *Findings) string {
		var b strings.Builder
		for _, s := range f.Shadowing {
			fmt.Fprintf(&b, "shadowing %q in %s\n", s.Route, s.PeerSubnet)
		}
		for _, s := range f.Strays {
			fmt.Fprintf(&b, "stray %s %s %s\n", s.Iface, s.Address, s.Route)
		}
		return b.String()
	}
	if got := text(first); got != text(&wantFound) {
		t.Fatalf("Report after the pass:\n%swant\n%s", got, text(&wantFound))
	}
	slices.Reverse(main)
	s.Check(main, want, host, nil)
	s.Report(&res)
	if res.Found != first {
		t.Errorf("a pass finding the same, in another order, made new Findings")
	}
	s.Check(main[:len(main)-1], want, host, nil) // the /25 gone
	s.Report(&res)
	if got := text(res.Found); got != text(&Findings{Shadowing: wantFound.Shadowing[:1], Strays: wantFound.Strays}) {
		t.Errorf("Report after the /25 went:\n%s", got)
	}
	if got := text(first); got != text(&wantFound) {
		t.Errorf("the Findings handed out before changed:\n%s", got)
	}
	s.Check(nil, want, host, nil)
	s.Report(&res)
	if len(res.Found.Shadowing)+len(res.Found.Strays) != 0 {
		t.Errorf("Report once all went: %s", text(res.Found))
	}
}

// TestShadowLogCarrier: where one route carries every peer's subnet (udp's
// 10.244.0.0/16 through flannel0), another program's route longer than it
// takes what it overlaps of a peer's subnet: a route to the whole subnet,
// one to a part, one holding two subnets (named with the first); not one
// as short as the carrier's, one to no peer's subnet, nor one the backend
// takes as its own (through flannel0). Without a carrier, the route to the
// whole subnet and the one holding two take nothing (the peers' own routes
// are as long or longer).
func TestShadowLogCarrier(t *testing.T) {
	want := []Route{
		{Dst: netip.MustParsePrefix("10.244.3.0/24")},
		{Dst: netip.MustParsePrefix("10.244.2.0/24")},
	}
	main := []netlink.Route{
		mainRoute("10.244.0.0/16", RouteProtocol, unix.RTN_UNICAST, "", 7),
		mainRoute("10.244.0.0/16", unix.RTPROT_BOOT, unix.RTN_UNICAST, "198.18.0.9", 2),
		mainRoute("10.244.9.0/24", unix.RTPROT_STATIC, unix.RTN_BLACKHOLE, "", 0),
		mainRoute("10.244.2.128/25", unix.RTPROT_BOOT, unix.RTN_UNICAST, "", 7),
		mainRoute("10.244.2.0/24", unix.RTPROT_STATIC, unix.RTN_UNICAST, "198.18.0.9", 2),
		mainRoute("10.244.3.0/26", unix.RTPROT_STATIC, unix.RTN_BLACKHOLE, "", 0),
		mainRoute("10.244.0.0/20", unix.RTPROT_STATIC, unix.RTN_UNREACHABLE, "", 0),
	}
	mine := func(r *netlink.Route) bool { return r.LinkIndex == 7 }
	for _, c := range []struct {
		carrier string
		want    []string
	}{
		{"10.244.0.0/16", []string{
			`"route"="unreachable 10.244.0.0/20 proto static" "peerSubnet"="10.244.2.0/24"`,
			`"route"="10.244.2.0/24 via 198.18.0.9 dev#2 proto static" "peerSubnet"="10.244.2.0/24"`,
			`"route"="blackhole 10.244.3.0/26 proto static" "peerSubnet"="10.244.3.0/24"`,
		}},
		{"", []string{`"route"="blackhole 10.244.3.0/26 proto static" "peerSubnet"="10.244.3.0/24"`}},
	} {
		var lines []string
		s := v0Lines(&lines)
		host := ShadowHost{}
		if c.carrier != "" {
			host.Carrier = netip.MustParsePrefix(c.carrier)
		}
		s.Check(main, want, host, mine)
		if len(lines) != len(c.want) {
			t.Fatalf("carrier %q: %d lines, want %d:\n%s", c.carrier, len(lines), len(c.want), strings.Join(lines, "\n"))
		}
		for i, w := range c.want {
			if !strings.Contains(lines[i], `"msg"="another route takes part of a peer's subnet" `+w) {
				t.Errorf("carrier %q: line %d\n%s\nwant %s", c.carrier, i, lines[i], w)
			}
		}
	}
}
