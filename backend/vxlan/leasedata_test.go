package vxlan

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
	"github.com/vishvananda/netns"
)

// desiredPeers returns n vxlan leases as BenchmarkFullResync's, each with
// its own VtepMAC.
func desiredPeers(n int) []subnet.Lease {
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
	return peers
}

// desiredBackend returns a backend for desired alone (no kernel), its own
// lease and an empty segment.
func desiredBackend(t *testing.T) (*Backend, subnet.Lease, *backend.Segment) {
	t.Helper()
	b, err := newBackend(backend.Config{
		Network: &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16"), SubnetLen: 29,
			BackendType: Type, Backend: json.RawMessage(`{}`)},
		External: backend.ExternalInterface{
			Iface:     &net.Interface{Index: 2, Name: "ext0", MTU: 1500},
			IfaceAddr: netip.MustParseAddr("198.18.0.1"),
			PublicIP:  netip.MustParseAddr("198.18.0.1"),
		},
		StateDir: t.TempDir(),
		Logger:   logr.Discard(),
	}, nil, netns.None())
	if err != nil {
		t.Fatal(err)
	}
	b.mac = backend.MAC{0x02, 0, 0, 0, 0xff, 0xff}
	return b, subnet.Lease{Subnet: netip.MustParsePrefix("10.244.0.8/29")}, &backend.Segment{Iface: "ext0", IfaceIndex: 2}
}

// TestPassDecodesChangedLeasesOnly: a pass whose leases are those of the
// last decodes none of their BackendData again. Each pass decoded every
// peer's JSON, some 18 % of its CPU at 5 000 peers and most of what
// desired allocated (BenchmarkFullResync).
func TestPassDecodesChangedLeasesOnly(t *testing.T) {
	const n = 1000
	b, own, seg := desiredBackend(t)
	peers := desiredPeers(n)
	if d := b.desired(own, peers, 5, seg, nil); len(d.neighs) != n {
		t.Fatalf("desired programs %d neighbours, want %d", len(d.neighs), n)
	}
	perPeer := testing.AllocsPerRun(5, func() { b.desired(own, peers, 5, seg, nil) }) / n
	t.Logf("a pass over %d unchanged leases allocated %.2f times per lease", n, perPeer)
	// Some 2 are left (Lease.Key's string, the result's slices, settle's
	// maps); decoding each lease's JSON again made it 9.
	if perPeer > 4 {
		t.Errorf("a pass over %d unchanged leases allocated %.2f times per lease; want at most 4: it decodes their BackendData again", n, perPeer)
	}
}

// TestLeaseDataChanged: a lease whose BackendData changes is programmed as
// it now says, and the decoded values of leases gone, or of values a lease
// no longer has, are not kept.
func TestLeaseDataChanged(t *testing.T) {
	b, own, seg := desiredBackend(t)
	peers := desiredPeers(3)
	b.desired(own, peers, 5, seg, nil)
	peers[1].Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"02:00:00:00:aa:bb"}`)
	peers[2].Attrs.BackendData = json.RawMessage(`{"VNI":1,"VtepMAC":"01:00:00:00:aa:bb"}`) // now refused
	d := b.desired(own, peers, 5, seg, nil)
	if len(d.neighs) != 2 || d.neighs[1].MAC != (backend.MAC{0x02, 0, 0, 0, 0xaa, 0xbb}) {
		t.Fatalf("after lease 1's VtepMAC changed to 02:00:00:00:aa:bb, desired wants the neighbours %v", d.neighs)
	}
	var res backend.Result
	b.skips.Report(&res)
	if len(res.SkippedLeases) != 1 || res.SkippedLeases[0].Key != peers[2].Key() {
		t.Errorf("lease 2's VtepMAC is now multicast; skipped: %v", res.SkippedLeases)
	}
	if b.dataCache.Len() != 3 {
		t.Errorf("after a pass over 3 leases, %d decoded values are kept, want 3", b.dataCache.Len())
	}
	b.desired(own, peers[:1], 5, seg, nil)
	if b.dataCache.Len() != 1 {
		t.Errorf("after a pass over 1 lease, %d decoded values are kept, want 1", b.dataCache.Len())
	}
}
