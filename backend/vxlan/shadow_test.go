package vxlan

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestShadowedPeerSubnetLogged: another program's route inside a peer's
// subnet and longer than it, not through the device (a blackhole for a
// /26, Calico's IPAM block left from a migration), takes that part of the
// peer's traffic; an address of this host in another subnet of the network
// (docker0 left at an old subnet) takes that subnet's. The pass leaves both
// alone, logs each once, and puts them in its Result for /status, as
// host-gw and udp do; a NIC's address in the network but outside the
// leases' range (SubnetMin to SubnetMax) takes nothing from any host and is
// not named. A route through flannel.1 into the network is ours
// whoever made it: the pass deletes it and does not name it as another
// program's. Once they are gone, each is said gone and Result is empty.
// Before this test only the namespace cluster's tests
// (TestShadowedPeerSubnetSaid, TestShadowFindingsShown) ran vxlan's check.
func TestShadowedPeerSubnetLogged(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	nl := h.ns.Handle
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	h.reconcile(p2)
	dev := h.link("flannel.1")
	block := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.64/26")), Type: unix.RTN_BLACKHOLE, Protocol: unix.RTPROT_STATIC}
	onDevice := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.2.128/25")), LinkIndex: dev.Attrs().Index,
		Scope: netlink.SCOPE_LINK, Protocol: unix.RTPROT_STATIC}
	for _, r := range []*netlink.Route{block, onDevice} {
		if err := nl.RouteAdd(r); err != nil {
			t.Fatalf("add %v: %v", r, err)
		}
	}
	h.addLink("docker0", "10.244.42.1/24")
	h.addLink("nic1", "10.244.0.5/24") // below SubnetMin: no host leases it
	for _, name := range []string{"docker0", "nic1"} {
		if err := nl.LinkSetUp(h.link(name)); err != nil {
			t.Fatal(err)
		}
	}

	const (
		shadowed = `"msg"="another route takes part of a peer's subnet" `
		strayMsg = `"msg"="an address of this host routes another subnet of the cluster network to its interface" `
	)
	for pass := 1; pass <= 3; pass++ {
		res := h.reconcile(p2)
		switch {
		case pass == 1 && (res.Removed != 1 || res.Added+res.Updated != 0):
			t.Errorf("pass %d: %v, want the route through flannel.1 removed, nothing else", pass, res)
		case pass > 1 && res.Changed():
			t.Errorf("pass %d: %v, want nothing changed", pass, res)
		}
		if f := res.Found; f == nil || len(f.Shadowing) != 1 || len(f.Strays) != 1 ||
			f.Shadowing[0].Route != "blackhole 10.244.2.64/26 proto static" || f.Shadowing[0].PeerSubnet != "10.244.2.0/24" ||
			f.Strays[0].Iface != "docker0" || f.Strays[0].Address != "10.244.42.1/24" {
			t.Errorf("pass %d: Result.Found %+v, want the blackhole route and docker0's address", pass, f)
		}
	}
	// The state without the bridges' neighbours: the kernel's entries for
	// IGMP (224.0.0.22) come and go on an up bridge.
	var lines []string
	for l := range strings.Lines(h.ns.State(t)) {
		if !strings.HasPrefix(l, "neigh docker0 ") && !strings.HasPrefix(l, "neigh nic1 ") {
			lines = append(lines, l)
		}
	}
	want := strings.ReplaceAll(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")+
		"addr docker0 10.244.42.1/24\nlink docker0 bridge up mtu 1500\naddr nic1 10.244.0.5/24\nlink nic1 bridge up mtu 1500\n"+
		"route 10.244.2.64/26 dev #0 proto 4 type 6\n"), "$MAC", h.b.mac.String())
	if got := strings.Join(lines, ""); got != want {
		t.Errorf("kernel state:\n%s\nwant:\n%s\ndiff:\n%s", got, want, lineDiff(got, want))
	}
	if got := h.routesTo("10.244.2.128/25"); got != "" {
		t.Errorf("routes to 10.244.2.128/25 after the passes: %s; want the one through flannel.1 deleted", got)
	}
	for _, l := range []string{
		shadowed + `"route"="blackhole 10.244.2.64/26 proto static" "peerSubnet"="10.244.2.0/24"`,
		strayMsg + `"iface"="docker0" "address"="10.244.42.1/24" "route"="10.244.42.0/24" "ownSubnet"="10.244.1.0/24"`,
	} {
		if n := h.countLogs(l); n != 1 {
			t.Errorf("%d lines with %s, want 1; logs:\n%s", n, l, h.logText())
		}
	}
	if n := h.countLogs(`"route"="10.244.2.128/25`); n != 0 {
		t.Errorf("the route through flannel.1 was named %d times as another program's; logs:\n%s", n, h.logText())
	}

	if err := nl.RouteDel(block); err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkDel(h.link("docker0")); err != nil {
		t.Fatal(err)
	}
	res := h.reconcile(p2)
	if f := res.Found; f == nil || len(f.Shadowing)+len(f.Strays) != 0 {
		t.Errorf("with the route and the address gone: Result.Found %+v, want empty", f)
	}
	for _, l := range []string{
		`"msg"="a route that took part of a peer's subnet no longer does" "route"="blackhole 10.244.2.64/26 proto static"`,
		`"msg"="an address of this host no longer routes another subnet of the cluster network" "iface"="docker0"`,
	} {
		if n := h.countLogs(l); n != 1 {
			t.Errorf("%d lines with %s, want 1; logs:\n%s", n, l, h.logText())
		}
	}
}
