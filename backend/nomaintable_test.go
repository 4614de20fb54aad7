package backend_test

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRoutesWithoutMainTable: in a namespace whose main routing table does
// not exist yet (no route, no address, lo down), OurRoutes and
// AppendPassRoutes list no route, where the kernel refuses their strict
// dump of the table (ENOENT, "ipv4: FIB table does not exist"); once the
// table exists they list what it holds, as before. Before, both failed
// with "list routes: no such file or directory", so that --release-lease
// and the udp backend's pass failed in such a namespace.
func TestRoutesWithoutMainTable(t *testing.T) {
	ns := nstest.New(t)
	h, err := backend.OpenHandle(ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if sh, ok := backend.StrictHandle(h); ok {
		_, err := sh.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		sh.Close()
		if !errors.Is(err, unix.ENOENT) {
			t.Logf("a strict dump of the main table of a fresh namespace = %v, not ENOENT: this kernel does not refuse it", err)
		}
	}
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, hh := range []struct {
		name string
		h    *netlink.Handle
	}{{"OpenHandle's", h}, {"the namespace's", ns.Handle}} {
		if rs, err := backend.OurRoutes(hh.h); err != nil || len(rs) != 0 {
			t.Errorf("OurRoutes(%s handle) without a main table = %v, %v; want none", hh.name, rs, err)
		}
		kept := []netlink.Route{{Dst: backend.IPNet(netip.MustParsePrefix("10.244.7.0/24"))}}
		rs, err := backend.AppendPassRoutes(slices.Clip(kept), hh.h, 1, network)
		if err != nil || len(rs) != 1 || rs[0].Dst.String() != "10.244.7.0/24" {
			t.Errorf("AppendPassRoutes(one route, %s handle) without a main table = %v, %v; want the route given alone", hh.name, rs, err)
		}
	}

	// The table made, by an address, both list what it holds.
	ext := ns.AddVeth(t, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	ours := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.8.0/24")), Gw: net.IPv4(198, 18, 0, 8), LinkIndex: ext.Attrs().Index, Protocol: backend.RouteProtocol}
	if err := h.RouteAdd(ours); err != nil {
		t.Fatal(err)
	}
	rs, err := backend.OurRoutes(h)
	if want := "10.244.8.0/24 via 198.18.0.8"; err != nil || len(rs) != 1 || rs[0].Dst.String()+" via "+rs[0].Gw.String() != want {
		t.Errorf("OurRoutes with our route = %v, %v; want %s alone", rs, err, want)
	}
	pass, err := backend.PassRoutes(h, ext.Attrs().Index, network)
	if err != nil || !slices.ContainsFunc(pass, func(r netlink.Route) bool { return r.Protocol == backend.RouteProtocol }) {
		t.Errorf("PassRoutes with our route = %v, %v; want it among them", pass, err)
	}
}
