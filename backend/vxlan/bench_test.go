package vxlan

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
	"github.com/vishvananda/netlink"
)

// BenchmarkFullResync measures programming N peers from an empty device (a
// recreated device, or the first Reconcile after a reboot) and a Reconcile
// that finds nothing to do. Subnets are /29 so that 5000 peers fit in
// 10.244.0.0/16.
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
				for b.Loop() {
					if res, err := be.Reconcile(ctx, own, peers); err != nil || res.Changed() {
						b.Fatalf("Reconcile = %v, %v", res, err)
					}
				}
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
