package vxlan

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

// BenchmarkFullResync measures programming N peers from an empty device (a
// recreated device, or the first Reconcile after a reboot), a Reconcile
// that finds nothing to do, and the passes a lease added or gone costs.
// Subnets are /29 so that 5000 peers fit in 10.244.0.0/16.
func BenchmarkFullResync(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("peers=%d", n), func(b *testing.B) {
			ns := nstest.New(b)
			ext := ns.AddVeth(b, "ext0", "peer0", netip.MustParsePrefix("198.18.0.1/24"))
			cfg := backend.Config{
				Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 29,
					BackendType: Type, Backend: json.RawMessage(`{}`)},
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
						BackendData: json.RawMessage(fmt.Sprintf(`{"VNI":1,"VtepMAC":"02:00:00:00:%02x:%02x"}`, i>>8, i&0xff)),
					},
				}
			}
			b.Run("from-empty", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					if err := ns.Handle.LinkDel(mustLink(b, ns, be.name)); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
					res, err := be.Reconcile(ctx, own, peers)
					if err != nil || res.Added != 3*n+2 {
						b.Fatalf("Reconcile = %v, %v", res, err)
					}
				}
				b.ReportMetric(float64(3*n)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
			})
			b.Run("unchanged", func(b *testing.B) {
				// Its own state, not from-empty's: a filter (-bench
				// .../unchanged) may run it alone.
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
				benchLeaseChurn(b, be, ns, ext, own, peers)
			})
		})
	}
}

func mustLink(b *testing.B, ns *nstest.NS, name string) netlink.Link {
	b.Helper()
	l, err := ns.Handle.LinkByName(name)
	if err != nil {
		b.Fatal(err)
	}
	return l
}

// benchLeaseChurn measures a lease added or gone as the agent pays for it:
// the pass that adds or deletes its route, neighbour and FDB entry, and
// another when the events of that pass's writes wake Watch (passes/op;
// wakes are coalesced, so one at most). Whether they woke it is told by
// Watch's own route and neighbour filters, run on the events up to a
// marker (a route, a neighbour on ext0) added or deleted after each pass on
// each of the two sockets, untimed. Link and address events are left out:
// such a pass writes no link or address.
func benchLeaseChurn(b *testing.B, be *Backend, ns *nstest.NS, ext netlink.Link, own subnet.Lease, peers []subnet.Lease) {
	ctx, cancel := context.WithCancel(context.Background())
	markRoute := &netlink.Route{Dst: backend.IPNet(netip.MustParsePrefix("10.244.255.248/29")), Gw: net.IPv4(198, 18, 0, 254),
		LinkIndex: ext.Attrs().Index, Protocol: unix.RTPROT_STATIC}
	markNeigh := &netlink.Neigh{LinkIndex: ext.Attrs().Index, Family: unix.AF_INET, State: netlink.NUD_PERMANENT,
		IP: net.IPv4(198, 18, 0, 253), HardwareAddr: net.HardwareAddr{0x02, 0, 0, 0, 0xfe, 0xfd}}
	route := be.routeFilter()
	type wake struct {
		route bool // from the route socket, else the neighbour socket
		woke  bool
	}
	woken, ready, done := make(chan wake), make(chan struct{}, 1), make(chan error, 1)
	routeWoke, neighWoke := false, false // the event goroutines'
	report := func(w wake) {
		select {
		case woken <- w:
		case <-ctx.Done():
		}
	}
	go func() {
		done <- backend.WatchEvents(ctx, ns.NsHandle, logr.Discard(), backend.EventFilter{
			Route: func(u netlink.RouteUpdate) bool {
				if u.Dst != nil && u.Dst.String() == markRoute.Dst.String() {
					report(wake{route: true, woke: routeWoke})
					routeWoke = false
				} else {
					routeWoke = routeWoke || route(u)
				}
				return false
			},
			Neigh: func(u backend.NeighEvent) bool {
				if u.LinkIndex == markNeigh.LinkIndex && markNeigh.IP.Equal(u.IP) {
					// A deletion is told twice: NUD_FAILED, then
					// RTM_DELNEIGH; the marker is the last.
					if u.Type == unix.RTM_DELNEIGH || u.State&netlink.NUD_PERMANENT != 0 {
						report(wake{woke: neighWoke})
						neighWoke = false
					}
				} else {
					neighWoke = neighWoke || be.neighEvent(u)
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
		if err := ns.Handle.RouteDel(markRoute); err != nil && !errors.Is(err, unix.ESRCH) {
			b.Error(err)
		}
		if err := ns.Handle.NeighDel(markNeigh); err != nil && !errors.Is(err, unix.ENOENT) {
			b.Error(err)
		}
	}()
	// mark flips both markers and returns whether the events before them
	// would have woken Watch.
	added := false
	mark := func() bool {
		b.Helper()
		var err error
		if added {
			err = errors.Join(ns.Handle.RouteDel(markRoute), ns.Handle.NeighDel(markNeigh))
		} else {
			err = errors.Join(ns.Handle.RouteAdd(markRoute), ns.Handle.NeighAdd(markNeigh))
		}
		if err != nil {
			b.Fatal(err)
		}
		added = !added
		w1, w2 := <-woken, <-woken
		if w1.route == w2.route {
			b.Fatalf("two markers from one socket: %v, %v", w1, w2)
		}
		return w1.woke || w2.woke
	}
	<-ready
	// The events of this pass, maybe thousands, are judged before the
	// first timed one.
	if _, err := be.Reconcile(ctx, own, peers); err != nil {
		b.Fatal(err)
	}
	mark()
	passes, fewer := 0, peers[:len(peers)-1]
	for i := 0; b.Loop(); i++ {
		set := fewer
		if i%2 == 1 {
			set = peers
		}
		if res, err := be.Reconcile(ctx, own, set); err != nil || res.Added+res.Removed != 3 {
			b.Fatalf("Reconcile = %v, %v", res, err)
		}
		passes++
		b.StopTimer()
		again := mark()
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
