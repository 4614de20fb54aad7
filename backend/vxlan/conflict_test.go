package vxlan

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
)

// TestSameVtepMAC: two leases with one VTEP MAC. At one public IP they are
// one host holding two subnets (a host that moved, its old lease not yet
// expired; a host given a second key by hand): both are programmed, the
// FDB entry once, since one MAC leads to one destination and that is the
// right one for both. At two public IPs (a state dir copied into a machine
// image) only one can be reached through the MAC: the lease written last,
// as of two keys for one subnet, whatever the subnets' order; the other is
// skipped, naming it, and leaves no FDB entry behind.
func TestSameVtepMAC(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	const mac = "02:00:00:00:00:03"
	moved := lease("10.244.3.0/24", "198.18.0.3", "vxlan", mac)
	old := lease("10.244.7.0/24", "198.18.0.3", "vxlan", mac)
	moved.ModRevision, old.ModRevision = 9, 5
	res := h.reconcile(moved, old)
	if res.Skipped != 0 {
		t.Errorf("one host at one public IP with two leases: result %v, want nothing skipped", res)
	}
	both := "fdb flannel.1 " + mac + " dst 198.18.0.3 permanent\n" +
		"neigh flannel.1 10.244.3.0 lladdr " + mac + " permanent\nroute 10.244.3.0/24 via 10.244.3.0 dev flannel.1 onlink proto 74\n" +
		"neigh flannel.1 10.244.7.0 lladdr " + mac + " permanent\nroute 10.244.7.0/24 via 10.244.7.0 dev flannel.1 onlink proto 74\n"
	h.check(withBase(both))
	if res := h.reconcile(moved, old); res.Changed() || res.Skipped != 0 {
		t.Errorf("a second Reconcile: %v, want nothing changed or skipped", res)
	}

	// A clone at another public IP, written after the original: the
	// clone wins whichever subnet sorts first, and again when the
	// original writes its lease again.
	clone := lease("10.244.2.0/24", "198.18.0.12", "vxlan", mac)
	for _, step := range []struct {
		name             string
		cloneRev, orgRev int64
		want             string
		winner, loser    []subnet.Lease
	}{
		{"the clone is newer", 11, 9, peerLines("10.244.2.0/24", "198.18.0.12", mac),
			[]subnet.Lease{clone}, []subnet.Lease{moved, old}},
		{"the original is written again", 11, 12, both,
			[]subnet.Lease{moved, old}, []subnet.Lease{clone}},
	} {
		clone.ModRevision, moved.ModRevision = step.cloneRev, step.orgRev
		for pass := 1; pass <= 2; pass++ {
			res := h.reconcile(clone, moved, old)
			if res.Skipped != len(step.loser) {
				t.Errorf("%s, pass %d: result %v, want %d skipped", step.name, pass, res, len(step.loser))
			}
			if pass == 2 && res.Changed() {
				t.Errorf("%s: a second Reconcile changed %v", step.name, res)
			}
		}
		h.check(withBase(step.want))
		for _, l := range step.loser {
			once := fmt.Sprintf(`"lease"=%q "reason"="VtepMAC %s is also the lease %s's, at public IP %s (the one written last wins)"`,
				l.Key(), mac, step.winner[0].Key(), step.winner[0].Attrs.PublicIP)
			if n := h.countLogs(once); n != 1 {
				t.Errorf("%s: logged %d times, want once: %s", step.name, n, once)
			}
		}
	}
}

// TestSameGateway: two leases whose subnets start at one address, of two
// lengths (a /22 over a /24: bad data, since no allocator hands them out).
// Both routes would go through one neighbour entry, <subnet>.0, which can
// hold one MAC: the other lease's traffic went to the wrong host, and
// nothing said so. The lease written last is programmed, the other skipped
// and logged once; their order does not matter.
func TestSameGateway(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	wide := lease("10.244.4.0/22", "198.18.0.4", "vxlan", "02:00:00:00:00:04")
	narrow := lease("10.244.4.0/24", "198.18.0.5", "vxlan", "02:00:00:00:00:05")
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	two := peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")
	wideLines := strings.ReplaceAll(peerLines("10.244.4.0/24", "198.18.0.4", "02:00:00:00:00:04"), "/24", "/22")
	for _, step := range []struct {
		name          string
		wideRev, narr int64
		want          string
		winner, loser subnet.Lease
	}{
		{"the /24 is newer", 5, 9, peerLines("10.244.4.0/24", "198.18.0.5", "02:00:00:00:00:05"), narrow, wide},
		{"the /22 is written again", 12, 9, wideLines, wide, narrow},
	} {
		wide.ModRevision, narrow.ModRevision = step.wideRev, step.narr
		for _, order := range [][]subnet.Lease{{p2, wide, narrow}, {narrow, wide, p2}} {
			for pass := 1; pass <= 2; pass++ {
				res := h.reconcile(order...)
				if res.Skipped != 1 {
					t.Errorf("%s, pass %d: result %v, want 1 skipped", step.name, pass, res)
				}
				if pass == 2 && res.Changed() {
					t.Errorf("%s: a second Reconcile changed %v", step.name, res)
				}
			}
			h.check(withBase(two + step.want))
		}
		once := fmt.Sprintf(`"lease"=%q "reason"="gateway 10.244.4.0 is also the lease %s's (one neighbour entry leads to one host; the one written last wins)"`,
			step.loser.Key(), step.winner.Key())
		if n := h.countLogs(once); n != 1 {
			t.Errorf("%s: logged %d times, want once: %s", step.name, n, once)
		}
	}
}

// TestPublicIPInsideOverlayVXLAN: a lease whose public IP lies in a subnet
// of the overlay (ours, or a peer's) is skipped and logged, as udp does
// (its TestPublicIPInsideOverlay): VXLAN sent there would follow that
// subnet's route back into flannel.1, which the kernel drops as a circular
// route without a word, or to one of our own pods.
func TestPublicIPInsideOverlayVXLAN(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	p2 := lease("10.244.2.0/24", "198.18.0.2", "vxlan", "02:00:00:00:00:02")
	inPeer := lease("10.244.4.0/24", "10.244.2.9", "vxlan", "02:00:00:00:00:04")
	inOwn := lease("10.244.5.0/24", "10.244.1.7", "vxlan", "02:00:00:00:00:05")
	inItself := lease("10.244.6.0/24", "10.244.6.1", "vxlan", "02:00:00:00:00:06")
	inOther := lease("10.244.8.0/24", "10.244.7.3", "vxlan", "02:00:00:00:00:08")
	hostgw := lease("10.244.7.0/24", "198.18.0.7", "host-gw", "")
	for pass := 1; pass <= 2; pass++ {
		res := h.reconcile(p2, inPeer, inOwn, inItself, hostgw, inOther)
		if res.Skipped != 5 {
			t.Errorf("pass %d: result %v, want 5 skipped (4 inside the overlay, the host-gw lease)", pass, res)
		}
	}
	h.check(withBase(peerLines("10.244.2.0/24", "198.18.0.2", "02:00:00:00:00:02")))
	for _, l := range []subnet.Lease{inPeer, inOwn, inItself, inOther} {
		once := fmt.Sprintf(`"lease"=%q "reason"="public IP %s lies in an overlay subnet: VXLAN to it would be routed into the overlay, not the underlay"`,
			l.Key(), l.Attrs.PublicIP)
		if n := h.countLogs(once); n != 1 {
			t.Errorf("logged %d times, want once: %s", n, once)
		}
	}
}

// TestPublicIPClasses: vxlan judges a public IP as udp and host-gw do
// (backend.Segment.RefuseHost): a peer in 0.0.0.0/8, "this network", which
// no packet may be sent to, is skipped, where its FDB entry was
// programmed; one in class E (240.0.0.0/4), which Linux routes and some
// clouds number hosts in, is programmed.
func TestPublicIPClasses(t *testing.T) {
	h := newHost(t, `{"Type":"vxlan"}`)
	classE := lease("10.244.2.0/24", "240.0.0.2", "vxlan", "02:00:00:00:00:02")
	zero := lease("10.244.3.0/24", "0.1.2.3", "vxlan", "02:00:00:00:00:03")
	for pass := 1; pass <= 2; pass++ {
		if res := h.reconcile(classE, zero); res.Skipped != 1 {
			t.Errorf("pass %d: result %v, want 1 skipped", pass, res)
		}
	}
	h.check(withBase(peerLines("10.244.2.0/24", "240.0.0.2", "02:00:00:00:00:02")))
	once := fmt.Sprintf(`"lease"=%q "reason"=%q`, zero.Key(), `public IP 0.1.2.3 lies in 0.0.0.0/8, "this network", a source address only`)
	if n := h.countLogs(once); n != 1 {
		t.Errorf("logged %d times, want once: %s", n, once)
	}
}
