package vxlan

import (
	"context"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// foreignAddrs is how many addresses addForeignAddrs adds.
const foreignAddrs = 20000

// addForeignAddrs adds what kube-proxy in IPVS mode holds on its dummy
// device kube-ipvs0 (a veth here: the test kernel may lack dummy), a /32
// for each Service's cluster IP, here foreignAddrs of 198.19.0.0/16.
// Nothing is sent to them.
func addForeignAddrs(t testing.TB, h *netlink.Handle) netlink.Link {
	t.Helper()
	ipvs := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}, PeerName: "kube-ipvs0p"}
	if err := h.LinkAdd(ipvs); err != nil {
		t.Fatal(err)
	}
	for i := range foreignAddrs {
		a := netip.AddrFrom4([4]byte{198, 19, byte(i >> 8), byte(i)})
		if err := h.AddrAdd(ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}); err != nil {
			t.Fatalf("add %s: %v", a, err)
		}
	}
	return ipvs
}

// TestPassIgnoresForeignAddrs: a pass on a Kubernetes node whose
// kube-proxy (IPVS mode) holds a /32 per Service on kube-ipvs0 holds none
// of them but in ReadSegment's Local. It parsed every address of the host
// into netlink's Addr twice (ReadSegment's dump, and the device's, which
// netlink filters in our process) and every local-table route the kernel
// makes for them (PassRoutes' dump, which netlink filters by table in our
// process too): some 2.9 kB per address, and with 50 000 Services 150 MB
// and 0.2 s per pass.
//
// The pass also still notices and repairs: our device's address deleted by
// someone else is back after it, and a peer whose public IP becomes an
// address of this host on kube-ipvs0 is skipped.
func TestPassIgnoresForeignAddrs(t *testing.T) {
	h := newHost(t, `{}`)
	ctx := context.Background()
	var ipvs netlink.Link
	peers, bare, loaded := foreignCost(t, h, func() { ipvs = addForeignAddrs(t, h.ns.Handle) })
	perAddr := (float64(loaded) - float64(bare)) / foreignAddrs
	t.Logf("a pass allocated %d bytes with no foreign address, %d with %d: %.0f bytes per foreign address", bare, loaded, foreignAddrs, perAddr)
	if perAddr > 500 {
		t.Errorf("a pass allocated %.0f bytes per foreign address (%d addresses); want under 500: it parses addresses or local routes it cannot use", perAddr, foreignAddrs)
	}

	// Someone deletes our device's address: the next pass puts it back.
	dev, err := h.ns.Handle.LinkByName(h.b.name)
	if err != nil {
		t.Fatal(err)
	}
	vtep := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.0/32"))}
	if err := h.ns.Handle.AddrDel(dev, vtep); err != nil {
		t.Fatal(err)
	}
	// The kernel flushes the routes and neighbours through a link with
	// its last address; they are back too.
	res, err := h.b.Reconcile(ctx, h.own, peers)
	if err != nil || res.ByKind["address"] != 1 || res.Removed != 0 {
		t.Fatalf("Reconcile after our address was deleted = %v, %v; want it added back, nothing removed", res, err)
	}
	if have, err := backend.ListAddrs(h.ns.Handle, dev, netlink.FAMILY_V4); err != nil || len(have) != 1 || have[0].IPNet.String() != "10.244.1.0/32" {
		t.Fatalf("the device's addresses after the pass: %v, %v; want 10.244.1.0/32", have, err)
	}

	// A peer's public IP becomes a service address of this host: the
	// peer is skipped, its route deleted.
	if err := h.ns.Handle.AddrAdd(ipvs, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.3/32"))}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.b.Reconcile(ctx, h.own, peers); err != nil {
		t.Fatal(err)
	}
	routes, err := backend.OurRoutes(h.ns.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) != 1 || routes[0].Dst != netip.MustParsePrefix("10.244.2.0/24") {
		t.Errorf("our routes once 198.18.0.3 is an address of this host: %v; want 10.244.2.0/24's only", routes)
	}
}
