package hostgw

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// BenchmarkFullResync measures programming N peers' routes into an empty
// main table (the external interface was down, or the host rebooted) and a
// Reconcile that finds nothing to do. Subnets are /29 so that 5000 peers fit
// in 10.244.0.0/16; the peers' public IPs are in ext0's 198.18.0.0/16.
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
			if _, err := be.Prepare(ctx); err != nil {
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
		})
	}
}
