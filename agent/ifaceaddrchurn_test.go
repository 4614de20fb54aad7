package agent

import (
	"net"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestFindExternalInterfaceUnderAddressChurn: on a Kubernetes node with
// kube-proxy in IPVS mode, kube-ipvs0 holds a /32 per Service, thousands of
// them, added and deleted tens a second during a deploy. The interface is
// found by reading each link's addresses alone, so a dump of kube-ipvs0's
// interrupted by that churn costs nothing when the underlay is another
// link. Before 2026-12-06 agentd read every address of the host in one
// dump, which the churn interrupted 5 times in a row, and exited 1 at start
// (`list addresses: interrupted 5 times in a row`; 3 of 7 starts of
// BenchmarkServiceAddrs with 20 000 addresses churned 50 a second).
func TestFindExternalInterfaceUnderAddressChurn(t *testing.T) {
	h, name := newTestNSNamed(t)
	addVeth(t, h, "eth0", "198.18.0.1/24")
	// A dummy device on a node; this machine's kernel has none, and a
	// veth holds addresses alike.
	ipvs := addVeth(t, h, "kube-ipvs0")
	const services = 20000
	for i := 1; i <= services; i++ {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 19, byte(i>>8), byte(i)), Mask: net.CIDRMask(32, 32)}}
		if err := h.AddrAdd(ipvs, a); err != nil {
			t.Fatalf("add service address %d: %v", i, err)
		}
	}

	// Churn kube-ipvs0's addresses from a handle of its own until the
	// test is done.
	ns, err := netns.GetFromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	ch, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer ch.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var churned int
	wg.Add(1)
	go func() {
		defer wg.Done()
		a := &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(198, 19, 200, 1), Mask: net.CIDRMask(32, 32)}}
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := ch.AddrAdd(ipvs, a); err != nil {
				t.Errorf("churn: add: %v", err)
				return
			}
			if err := ch.AddrDel(ipvs, a); err != nil {
				t.Errorf("churn: delete: %v", err)
				return
			}
			churned++
		}
	}()

	const tries = 10
	var failed []error
	for range tries {
		ext, err := findExternalInterface(h, &Config{Ifaces: []string{"eth0"}})
		switch {
		case err != nil:
			failed = append(failed, err)
		case ext.Iface.Name != "eth0" || ext.IfaceAddr.String() != "198.18.0.1":
			t.Errorf("found %s %s, want eth0 198.18.0.1", ext.Iface.Name, ext.IfaceAddr)
		}
	}
	close(stop)
	wg.Wait()
	if churned == 0 {
		t.Fatal("no address was churned while the interface was looked for: the test proves nothing")
	}
	if len(failed) > 0 {
		t.Errorf("%d of %d looks for --iface eth0 failed while kube-ipvs0's %d addresses churned (%d changes); first: %v",
			len(failed), tries, services, churned, failed[0])
	}
}
