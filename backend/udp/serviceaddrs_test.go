package udp

import (
	"context"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// serviceAddr is the i-th (i < 130 816) address addServiceAddrs and
// churnServiceAddrs use: 198.18.1.0 and on, past the test's hosts
// (198.18.0.0/24).
func serviceAddr(i int) *netlink.Addr {
	a := netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, 0xc6120100+uint32(i)))) // 198.18.1.0 + i
	return &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(a, 32))}
}

// addServiceAddrs adds what kube-proxy in IPVS mode holds on its dummy
// device kube-ipvs0 (a veth here: the test kernel may lack dummy), a /32
// for each Service's cluster IP, n of them. Nothing is sent to them.
func addServiceAddrs(t testing.TB, ns *nstest.NS, n int) netlink.Link {
	t.Helper()
	ipvs := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}, PeerName: "kube-ipvs0p"}
	if err := ns.Handle.LinkAdd(ipvs); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := ns.Handle.AddrAdd(ipvs, serviceAddr(i)); err != nil {
			t.Fatalf("add %s: %v", serviceAddr(i).IPNet, err)
		}
	}
	return ipvs
}

// churnServiceAddrs deletes the oldest of the n service addresses on ipvs
// (addServiceAddrs') and adds a new one, by turns, every interval, as
// kube-proxy does while Services come and go, from a handle of its own,
// until stop is called, which returns the changes made; changed returns
// them so far, and -1 once the churn failed.
func churnServiceAddrs(t testing.TB, ns *nstest.NS, ipvs netlink.Link, n int, interval time.Duration) (changed func() int, stop func() int) {
	t.Helper()
	nl, err := netlink.NewHandleAt(ns.NsHandle)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	var changes atomic.Int64
	var churnErr error
	wg.Go(func() {
		defer nl.Close()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if i%2 == 0 {
				churnErr = nl.AddrDel(ipvs, serviceAddr(i/2))
			} else {
				churnErr = nl.AddrAdd(ipvs, serviceAddr(n+i/2))
			}
			if churnErr != nil {
				changes.Store(-1)
				return
			}
			changes.Add(1)
		}
	})
	var once sync.Once
	stop = func() int {
		once.Do(func() {
			close(done)
			wg.Wait()
			if churnErr != nil {
				t.Errorf("churn the service addresses: %v", churnErr)
			}
		})
		return int(changes.Load())
	}
	t.Cleanup(func() { stop() })
	return func() int { return int(changes.Load()) }, stop
}

// TestPassUnderServiceAddrChurn: on a Kubernetes node whose kube-proxy (IPVS
// mode) holds a /32 per Service on kube-ipvs0 and adds and deletes them as
// Services come and go, each pass read every address of the host
// (ReadSegment) to know which peers' public IPs are this host's; the churn
// marked that dump interrupted again and again, and the pass failed with
// "list addresses: interrupted 5 times in a row" (and cost 0.5-2 µs per
// address when it did not). While Watch runs, a pass now takes them from
// their events (backend.SegmentReader), as vxlan's and host-gw's do: every
// pass succeeds while the addresses change some 200 times, and a peer's
// public IP made a service address, then deleted, is still seen at the
// next pass.
func TestPassUnderServiceAddrChurn(t *testing.T) {
	const services, changes = 5000, 200
	h := newTestNet(t)
	ipvs := addServiceAddrs(t, h.host, services)
	p2, p3 := lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type)
	peers := []subnet.Lease{p2, p3}
	two := entry{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")}
	three := entry{netip.MustParsePrefix("10.244.3.0/24"), netip.MustParseAddrPort("198.18.0.3:8285")}
	h.prepare()
	h.reconcile(peers...)
	nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
	// The first pass of Watch's subscription dumps every address (it has
	// no events from before): before the churn.
	h.reconcile(peers...)

	changed, stop := churnServiceAddrs(t, h.host, ipvs, services, time.Millisecond)
	ctx := context.Background()
	start := time.Now()
	passes := 0
	for n := changed(); n >= 0 && n < changes; n = changed() {
		passes++
		if _, err := h.b.Reconcile(ctx, h.own, peers); err != nil {
			t.Fatalf("pass %d, after %d changes of kube-ipvs0's addresses: %v", passes, n, err)
		}
	}
	took := time.Since(start)

	// A peer's public IP made a service address: the next pass skips the
	// peer; deleted, the pass after gives it its entry back.
	svc := &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("198.18.0.3/32"))}
	for _, step := range []struct {
		change func(netlink.Link, *netlink.Addr) error
		what   string
		want   []entry
		reason string
	}{
		{h.host.Handle.AddrAdd, "added", []entry{two}, "public IP 198.18.0.3 is an address of this host (kube-ipvs0)"},
		{h.host.Handle.AddrDel, "deleted", []entry{two, three}, ""},
	} {
		if err := step.change(ipvs, svc); err != nil {
			t.Fatal(err)
		}
		res, err := h.b.Reconcile(ctx, h.own, peers)
		if err != nil {
			t.Fatalf("the pass after %s was %s on kube-ipvs0: %v", svc.IPNet, step.what, err)
		}
		if got := h.b.tbl.Load().entries; !slices.Equal(got, step.want) {
			t.Errorf("%s %s on kube-ipvs0: forwarding table %v, want %v", step.what, svc.IPNet, got, step.want)
		}
		var want []backend.SkippedLease
		if step.reason != "" {
			want = []backend.SkippedLease{{Key: p3.Key(), Reason: step.reason}}
		}
		if !slices.Equal(res.SkippedLeases, want) {
			t.Errorf("%s %s on kube-ipvs0: skipped %v, want %v", step.what, svc.IPNet, res.SkippedLeases, want)
		}
	}
	n := stop()
	t.Logf("%d passes in %v while kube-ipvs0's %d addresses changed %d times", passes, took.Round(time.Millisecond), services, n)
}

// TestPassIgnoresServiceAddrs: an unchanged pass on a host whose
// kube-proxy (IPVS mode) holds a /32 per Service on kube-ipvs0 costs no
// more than on a host without them. It read every address of the host
// (ReadSegment: some 160 bytes allocated each) and, to find our one route,
// every route of every table, the local table's route for each of those
// addresses among them (OurRoutes: some 400 bytes each, parsed by netlink
// and dropped): 11 MB of garbage and 35 to 65 ms per pass with 20 000
// Services (BenchmarkServiceAddrs). While Watch runs the pass takes the
// addresses from their events (backend.SegmentReader), and asks the kernel
// for the main table's routes of our protocol alone.
func TestPassIgnoresServiceAddrs(t *testing.T) {
	const services = 5000
	h := newTestNet(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type)}
	h.prepare()
	h.reconcile(peers...)
	nstest.RunWatch(t, h.b.Watch, &h.b.subscribed)
	h.reconcile(peers...) // the subscription's first pass dumps every address
	bare := nstest.PassGarbage(t, h.b, h.own, peers)
	addServiceAddrs(t, h.host, services)
	h.reconcile(peers...) // their events, or a dump if the kernel dropped some
	loaded := nstest.PassGarbage(t, h.b, h.own, peers)
	perAddr := (float64(loaded) - float64(bare)) / services
	t.Logf("a pass allocated %d bytes with no service address, %d with %d: %.0f bytes per service address", bare, loaded, services, perAddr)
	if perAddr > 50 {
		t.Errorf("a pass allocated %.0f bytes per service address on kube-ipvs0 (%d addresses); want under 50: it reads addresses or routes it cannot use",
			perAddr, services)
	}
}

// TestPassBeforeWatchIgnoresServiceAddrs: TestPassIgnoresServiceAddrs for
// the passes before Watch runs (the agent's first ones, which race Watch's
// start), or of a backend whose Watch never runs. They read every address
// of the host, since only Watch subscribed to their events: some 200 bytes
// and 4 µs per address each pass, 204 ms with 50 000 Services
// (BenchmarkServiceAddrs). Prepare now subscribes, and Watch goes on with
// that subscription.
func TestPassBeforeWatchIgnoresServiceAddrs(t *testing.T) {
	const services = 5000
	h := newTestNet(t)
	peers := []subnet.Lease{lease("10.244.2.0/24", "198.18.0.2", Type), lease("10.244.3.0/24", "198.18.0.3", Type)}
	h.prepare()
	t.Cleanup(func() {
		// Watch's end stops what the passes started.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_ = h.b.Watch(ctx, func() {})
	})
	h.reconcile(peers...) // the first pass dumps every address
	bare := nstest.PassGarbage(t, h.b, h.own, peers)
	addServiceAddrs(t, h.host, services)
	h.reconcile(peers...) // their events, or a dump if the kernel dropped some
	loaded := nstest.PassGarbage(t, h.b, h.own, peers)
	perAddr := (float64(loaded) - float64(bare)) / services
	t.Logf("a pass before Watch allocated %d bytes with no service address, %d with %d: %.0f bytes per service address", bare, loaded, services, perAddr)
	if perAddr > 50 {
		t.Errorf("a pass before Watch allocated %.0f bytes per service address on kube-ipvs0 (%d addresses); want under 50: it reads every address of the host",
			perAddr, services)
	}
}
