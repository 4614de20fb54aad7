package udp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
)

// BenchmarkServiceAddrs measures a udp pass (Reconcile, 100 peers) on a
// Kubernetes node whose kube-proxy (IPVS mode) holds n service addresses on
// kube-ipvs0, one of them replaced by another (a Service gone, another
// made) before each pass, side by side in each iteration on four hosts
// (namespaces) of their own:
//
//   - dump: the backend's subscription to the address events is ended
//     after Prepare and no Watch runs, so the pass reads every address of
//     the host (backend.SegmentReader unsubscribed reads as ReadSegment),
//     as each pass did until it followed their events, and each pass
//     before Watch ran until Prepare subscribed;
//   - prepared: no Watch runs, and the pass takes the addresses from the
//     events Prepare subscribed to, dumping the external interface's alone;
//   - events: Watch runs, and the pass takes them from their events too;
//   - bare: Watch runs, and the host has no service address.
//
// It reports the time and the bytes allocated of each per pass, and the
// ratios dump/events and dump/prepared.
func BenchmarkServiceAddrs(b *testing.B) {
	for _, n := range []int{20000, 50000} {
		b.Run(fmt.Sprintf("addrs=%d", n), func(b *testing.B) {
			hosts := []*benchHost{newBenchHost(b, "dump", n, unsubscribed), newBenchHost(b, "prepared", n, prepared),
				newBenchHost(b, "events", n, watched), newBenchHost(b, "bare", 0, watched)}
			for b.Loop() {
				for _, h := range hosts {
					h.pass(b)
				}
			}
			ops := float64(b.N)
			for _, h := range hosts {
				b.ReportMetric(float64(h.took.Microseconds())/ops/1e3, h.name+"-ms/pass")
				b.ReportMetric(float64(h.alloc)/ops/1e6, h.name+"-MB/pass")
			}
			dump, prep, events := hosts[0], hosts[1], hosts[2]
			b.ReportMetric(float64(dump.took)/float64(events.took), "time-dump/events")
			b.ReportMetric(float64(dump.alloc)/float64(events.alloc), "alloc-dump/events")
			b.ReportMetric(float64(dump.took)/float64(prep.took), "time-dump/prepared")
			b.ReportMetric(float64(dump.alloc)/float64(prep.alloc), "alloc-dump/prepared")
		})
	}
}

// benchHost is a host of BenchmarkServiceAddrs: a prepared backend in a
// namespace of its own, with n service addresses on kube-ipvs0.
type benchHost struct {
	name  string
	ns    *nstest.NS
	b     *Backend
	own   subnet.Lease
	peers []subnet.Lease
	ipvs  netlink.Link
	n     int
	i     int           // replacements made
	took  time.Duration // in passes
	alloc uint64        // bytes, in passes
}

// benchMode is how a benchHost's passes learn the host's addresses.
type benchMode int

const (
	unsubscribed benchMode = iota // a dump of them all each pass
	prepared                      // the events Prepare subscribed to; no Watch
	watched                       // the events, while Watch runs
)

// newBenchHost makes a benchHost and runs its first pass, whose dump of
// every address the subscription starts from; watched, it runs Watch
// first.
func newBenchHost(b *testing.B, name string, n int, mode benchMode) *benchHost {
	b.Helper()
	ns := nstest.New(b)
	ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
	h := &benchHost{name: name, ns: ns, own: lease("10.244.1.0/24", "198.18.0.1", Type), n: n}
	if n > 0 {
		h.ipvs = addServiceAddrs(b, ns, n)
	}
	for i := range 100 {
		h.peers = append(h.peers, lease(fmt.Sprintf("10.244.%d.0/24", 2+i), fmt.Sprintf("198.18.0.%d", 2+i), Type))
	}
	cfg := backend.Config{
		Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 24,
			BackendType: Type, Backend: json.RawMessage(`{"Type":"udp"}`)},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: ext.Attrs().Index, Name: "ext0", MTU: ext.Attrs().MTU},
			IfaceAddr: netip.MustParseAddr("198.18.0.1"),
			PublicIP:  netip.MustParseAddr("198.18.0.1"),
		},
		Logger: logr.Discard(),
	}
	var err error
	if h.b, err = newBackend(cfg, ns.Handle, ns.NsHandle, ns.Do); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stopKeeper(b, ns, h.b) })
	if _, err := h.b.Prepare(context.Background()); err != nil {
		b.Fatalf("%s: Prepare: %v", name, err)
	}
	if mode == unsubscribed {
		h.b.segs.Hold(h.b.ns)()
	}
	if mode == watched {
		nstest.RunWatch(b, h.b.Watch, &h.b.subscribed)
	} else {
		// Watch's end stops what the passes start (the workers, the
		// keeper's watch) and lets go of the claim on the device.
		b.Cleanup(func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_ = h.b.Watch(ctx, func() {})
		})
	}
	if _, err := h.b.Reconcile(context.Background(), h.own, h.peers); err != nil {
		b.Fatalf("%s: first pass: %v", name, err)
	}
	return h
}

// pass replaces a service address, as BenchmarkSegmentReader's replace
// does, then runs and measures a pass.
func (h *benchHost) pass(b *testing.B) {
	if h.n > 0 {
		a, moved := serviceAddr(h.i%h.n), serviceAddr(h.n+h.i%h.n)
		if h.i/h.n%2 == 1 {
			a, moved = moved, a
		}
		h.i++
		if err := errors.Join(h.ns.Handle.AddrDel(h.ipvs, a), h.ns.Handle.AddrAdd(h.ipvs, moved)); err != nil {
			b.Fatalf("%s: replace a service address: %v", h.name, err)
		}
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	start := time.Now()
	if _, err := h.b.Reconcile(context.Background(), h.own, h.peers); err != nil {
		b.Fatalf("%s: pass: %v", h.name, err)
	}
	h.took += time.Since(start)
	runtime.ReadMemStats(&m1)
	h.alloc += m1.TotalAlloc - m0.TotalAlloc
}
