package hostgw

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BenchmarkFullResync measures programming N peers' routes into an empty
// main table (the external interface was down, or the host rebooted), a
// Reconcile that finds nothing to do, and the passes a lease added or gone
// costs. Subnets are /29 so that 5000 peers fit in 10.244.0.0/16; the
// peers' public IPs are in ext0's 198.18.0.0/16.
func BenchmarkFullResync(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/16"))
			cfg := backend.Config{
				Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 29,
					BackendType: Type, Backend: json.RawMessage(`{"Type":"host-gw"}`)},
				External: backend.ExternalInterface{
					Iface:     &net.Interface{Index: ext.Attrs().Index, Name: "ext0", MTU: 1500},
					IfaceAddr: netip.MustParseAddr("198.18.0.1"),
					PublicIP:  netip.MustParseAddr("198.18.0.1"),
				},
				StateDir: b.TempDir(),
				Logger:   logr.Discard(),
			}
			be, err := newBackend(cfg, ns.Handle, ns.NsHandle)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			if _, err := be.Prepare(b.Context()); err != nil {
				b.Fatal(err)
			}
			own := subnet.Lease{Subnet: netip.MustParsePrefix("10.244.0.8/29")}
			peers := make([]subnet.Lease, n)
			for i := range peers {
				a := netip.AddrFrom4([4]byte{10, 244, byte((i + 2) * 8 >> 8), byte((i + 2) * 8)})
				peers[i] = subnet.Lease{
					Subnet: netip.PrefixFrom(a, 29),
					Attrs: subnet.LeaseAttrs{
						PublicIP:    netip.AddrFrom4([4]byte{198, 18, byte(1 + i>>8), byte(i)}),
						BackendType: Type,
					},
				}
			}
			b.Run("from-empty", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					// Down and up: the kernel deletes every route through ext0.
					if err := ns.Handle.LinkSetDown(ext); err != nil {
						b.Fatal(err)
					}
					if err := ns.Handle.LinkSetUp(ext); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					res, err := be.Reconcile(ctx, own, peers)
					if err != nil || res.Added != n {
						b.Fatalf("Reconcile = %v, %v", res, err)
					}
				}
				b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "routes/s")
			})
			b.Run("unchanged", func(b *testing.B) {
				if _, err := be.Reconcile(ctx, own, peers); err != nil {
					b.Fatal(err)
				}
				for b.Loop() {
					if res, err := be.Reconcile(ctx, own, peers); err != nil || res.Changed() {
						b.Fatalf("Reconcile = %v, %v", res, err)
					}
				}
			})
			b.Run("lease-added-or-gone", func(b *testing.B) {
				benchLeaseChurn(b, be, ns, own, peers)
			})
		})
	}
}

// benchLeaseChurn measures a lease added or gone as the agent pays for it:
// the pass that adds or deletes its route, and another when the events of
// that pass's writes wake Watch (passes/op; wakes are coalesced, so one at
// most). Whether they woke it is told by Watch's route filter, run on the
// events up to a marker route added or deleted after each pass, untimed.
func benchLeaseChurn(b *testing.B, be *Backend, ns *nstest.NS, own subnet.Lease, peers []subnet.Lease) {
	ctx, cancel := context.WithCancel(context.Background())
	marker := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.255.248/29")), Gw: net.IPv4(198, 18, 0, 254),
		LinkIndex: be.ext.Iface.Index, Protocol: unix.RTPROT_STATIC}
	filter := be.routeFilter()
	woken, ready, done := make(chan bool), make(chan struct{}, 1), make(chan error, 1)
	woke := false // the event goroutine's
	go func() {
		done <- backend.WatchEvents(ctx, ns.NsHandle, logr.Discard(), backend.EventFilter{
			Route: func(u netlink.RouteUpdate) bool {
				if u.Dst.String() == marker.Dst.String() {
					select {
					case woken <- woke:
					case <-ctx.Done():
					}
					woke = false
				} else {
					woke = woke || filter(u)
				}
				return false
			},
			Subscribed: func() {
				select {
				case ready <- struct{}{}:
				default:
				}
			},
		}, func() {})
	}()
	defer func() {
		cancel()
		<-done
		// Gone when this runs again (-count).
		if err := ns.Handle.RouteDel(marker); err != nil && !errors.Is(err, unix.ESRCH) {
			b.Error(err)
		}
	}()
	<-ready
	// The events of this pass, maybe thousands, are judged before the
	// first timed one.
	if _, err := be.Reconcile(ctx, own, peers); err != nil {
		b.Fatal(err)
	}
	if err := ns.Handle.RouteAdd(marker); err != nil {
		b.Fatal(err)
	}
	<-woken
	passes, fewer := 0, peers[:len(peers)-1]
	for i := 0; b.Loop(); i++ {
		set, mark := fewer, ns.Handle.RouteDel
		if i%2 == 1 {
			set, mark = peers, ns.Handle.RouteAdd
		}
		if res, err := be.Reconcile(ctx, own, set); err != nil || res.Added+res.Removed != 1 {
			b.Fatalf("Reconcile = %v, %v", res, err)
		}
		passes++
		b.StopTimer()
		if err := mark(marker); err != nil {
			b.Fatal(err)
		}
		again := <-woken
		b.StartTimer()
		if again {
			if res, err := be.Reconcile(ctx, own, set); err != nil || res.Changed() {
				b.Fatalf("the pass woken after = %v, %v", res, err)
			}
			passes++
		}
	}
	b.ReportMetric(float64(passes)/float64(b.N), "passes/op")
}
