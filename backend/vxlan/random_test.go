package vxlan

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRandomPeerSets replays random sequences of peer sets, with random
// damage done to the kernel between some of them, and checks after every
// Reconcile that the kernel holds exactly what a naive model of the design
// note derives from the last set, and that a second Reconcile changes nothing.
func TestRandomPeerSets(t *testing.T) {
	for _, direct := range []bool{false, true} {
		t.Run(fmt.Sprintf("DirectRouting=%v", direct), func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			t.Logf("seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, seed>>1))
			h := newHost(t, fmt.Sprintf(`{"Type":"vxlan","DirectRouting":%v}`, direct))
			for step := range 40 {
				peers := randomPeers(rng)
				what := "none"
				if step > 0 && rng.IntN(3) == 0 {
					what = damage(t, h, rng)
				}
				if _, err := h.b.Reconcile(t.Context(), h.own, peers); err != nil {
					t.Fatalf("step %d (damage %s): Reconcile: %v", step, what, err)
				}
				want := model(h.b.mac, peers, direct)
				if got := h.ns.State(t); got != want {
					t.Fatalf("step %d (damage %s), peers %s:\n%s\nwant:\n%s\ndiff:\n%s", step, what, describe(peers), got, want, lineDiff(got, want))
				}
				if res, err := h.b.Reconcile(t.Context(), h.own, peers); err != nil || res.Changed() {
					t.Fatalf("step %d: a second Reconcile changed %v, %v", step, res, err)
				}
			}
		})
	}
}

// randomPeers draws a peer set from a small pool so that consecutive sets
// overlap, peers change MAC and public IP, MACs collide now and then (at
// one public IP or at two), and leases are written in any order.
func randomPeers(rng *rand.Rand) []subnet.Lease {
	var peers []subnet.Lease
	for i := 2; i <= 9; i++ {
		if rng.IntN(3) == 0 {
			continue
		}
		sn := fmt.Sprintf("10.244.%d.0/24", i)
		pub := []string{"198.18.0.", "198.19.0."}[rng.IntN(2)] + fmt.Sprint(2+rng.IntN(6))
		mac := fmt.Sprintf("02:00:00:00:00:%02x", 1+rng.IntN(10))
		switch rng.IntN(10) {
		case 0:
			peers = append(peers, lease(sn, pub, "host-gw", ""))
		case 1:
			l := lease(sn, pub, "vxlan", "")
			l.Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"nope"}`)
			peers = append(peers, l)
		default:
			l := lease(sn, pub, "vxlan", mac)
			l.ModRevision = int64(rng.IntN(4))
			peers = append(peers, l)
		}
	}
	return peers
}

// model is the kernel state the design note implies, written independently
// of the backend's code: its naive counterpart.
func model(ownMAC backend.MAC, peers []subnet.Lease, direct bool) string {
	lines := strings.Split(strings.Trim(strings.ReplaceAll(base, "$MAC", ownMAC.String()), "\n"), "\n")
	segment := netip.MustParsePrefix("198.18.0.0/24")
	var tunnels []subnet.Lease
	macOf := map[string]string{}
	for _, p := range peers {
		if p.Attrs.BackendType != "vxlan" {
			continue
		}
		var d struct{ VtepMAC string }
		if json.Unmarshal(p.Attrs.BackendData, &d) != nil {
			continue
		}
		hw, err := net.ParseMAC(d.VtepMAC)
		if err != nil {
			continue
		}
		pub := p.Attrs.PublicIP
		if direct && segment.Contains(pub) {
			lines = append(lines, fmt.Sprintf("route %s via %s dev ext0 proto 74", p.Subnet, pub))
			continue
		}
		tunnels = append(tunnels, p)
		macOf[p.Key()] = hw.String()
	}
	// A MAC leads to one public IP: the lease written last (on a tie, the
	// smaller key) takes it, and others at that IP share it.
	slices.SortFunc(tunnels, func(a, b subnet.Lease) int {
		if a.ModRevision != b.ModRevision {
			return int(b.ModRevision - a.ModRevision)
		}
		return strings.Compare(a.Key(), b.Key())
	})
	dst := map[string]netip.Addr{}
	for _, p := range tunnels {
		mac, pub := macOf[p.Key()], p.Attrs.PublicIP
		if d, ok := dst[mac]; ok && d != pub {
			continue
		}
		peer := strings.Split(strings.TrimSpace(peerLines(p.Subnet.String(), pub.String(), mac)), "\n")
		if _, ok := dst[mac]; ok {
			peer = peer[1:] // its FDB entry is there already
		}
		dst[mac] = pub
		lines = append(lines, peer...)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n") + "\n"
}

// damage does to the kernel one thing other software might, and says what.
func damage(t *testing.T, h *host, rng *rand.Rand) string {
	t.Helper()
	nl := h.ns.Handle
	dev := h.link("flannel.1")
	idx := dev.Attrs().Index
	var err error
	what := ""
	switch rng.IntN(8) {
	case 0:
		what, err = "device deleted", nl.LinkDel(dev)
	case 1:
		what, err = "device down", nl.LinkSetDown(dev)
	case 2:
		what, err = "MTU changed", nl.LinkSetMTU(dev, 1280)
	case 3:
		what, err = "MAC changed", nl.LinkSetHardwareAddr(dev, net.HardwareAddr{2, 0xee, 0, 0, 0, byte(rng.IntN(256))})
	case 4:
		routes, _ := backend.OurRoutes(nl)
		if len(routes) == 0 {
			return "nothing (no route)"
		}
		r := routes[rng.IntN(len(routes))]
		what = "route deleted: " + r.String()
		err = nl.RouteDel(&netlink.Route{Dst: backend.IPNet(r.Dst), LinkIndex: r.LinkIndex, Protocol: backend.RouteProtocol})
	case 5:
		ns, _ := backend.ListNeighsOn(nl, idx)
		if len(ns) == 0 {
			return "nothing (no neighbour)"
		}
		n := ns[rng.IntN(len(ns))]
		what = "neighbour deleted: " + n.String()
		err = nl.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_INET, IP: backend.IP(n.IP)})
	case 6:
		fs, _ := backend.ListFDBOn(nl, idx)
		if len(fs) == 0 {
			return "nothing (no FDB entry)"
		}
		f := fs[rng.IntN(len(fs))]
		what = "FDB entry deleted: " + f.String()
		err = nl.NeighDel(&netlink.Neigh{LinkIndex: idx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
			HardwareAddr: f.MAC.HardwareAddr(), IP: backend.IP(f.Dst)})
	case 7:
		what = "stale route of ours added"
		err = nl.RouteReplace(&netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.250.0/24")), Gw: net.IPv4(198, 18, 0, 250),
			LinkIndex: h.ext.Attrs().Index, Protocol: backend.RouteProtocol})
	}
	if err != nil {
		t.Fatalf("damage %s: %v", what, err)
	}
	return what
}

func describe(peers []subnet.Lease) string {
	var s []string
	for _, p := range peers {
		s = append(s, fmt.Sprintf("%s:%s:%s:%s", p.Subnet, p.Attrs.PublicIP, p.Attrs.BackendType, p.Attrs.BackendData))
	}
	return strings.Join(s, " ")
}
