package agent

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// manyPeers is our vxlan lease and n peers' with backend data each of its
// own.
func manyPeers(n int) (own subnet.Lease, peers []subnet.Lease) {
	own = subnet.Lease{Subnet: netip.MustParsePrefix("10.0.0.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr("198.18.0.1"), BackendType: "vxlan"}}
	peers = make([]subnet.Lease, n)
	for i := range peers {
		peers[i] = subnet.Lease{
			Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(1 + i>>8), byte(i), 0}), 24),
			Attrs: subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(1 + i>>8), byte(i)}), BackendType: "vxlan",
				BackendData: fmt.Appendf(nil, `{"VNI":1,"VtepMAC":"aa:bb:cc:dd:%02x:%02x"}`, i>>8, i&0xff)},
		}
	}
	return own, peers
}

// TestUnchangedPassMakesNoGarbagePerPeer: recording a pass over the lease
// set of the last one makes nothing per peer. Before, it made ten strings
// per peer each pass (the lease set's facts twice, the key), 2.4 MB at
// 5000 peers, on the reconcile goroutine, every pass the resync ticker or
// a netlink event woke. What it records stays right: a drift repair is
// counted, and a peer whose backend data changed in place is no longer
// programmed after a failed pass.
func TestUnchangedPassMakesNoGarbagePerPeer(t *testing.T) {
	const n = 5000
	o := newObserver()
	own, peers := manyPeers(n)
	o.reconciled(own, peers, backend.Result{}, nil, time.Millisecond)
	if allocs := testing.AllocsPerRun(5, func() {
		o.reconciled(own, peers, backend.Result{}, nil, time.Millisecond)
	}); allocs > 50 {
		t.Errorf("a pass over the same %d peers allocated %v times; want fewer than 50, none per peer", n, allocs)
	}

	repair := backend.Result{}
	repair.Count("route", 1)
	o.reconciled(own, peers, repair, nil, time.Millisecond)
	peers[7].Attrs.BackendData[len(`{"VNI":`)] = '2'
	o.reconciled(own, peers, backend.Result{}, errors.New("boom"), time.Millisecond)
	st := o.status(newHealth(logr.Discard()))
	if st.DriftRepairs["route"] != 1 || st.PeersKnown != n || st.PeersProgrammed != n-1 {
		t.Errorf("after a repair on the same peers and a failed pass with one peer's VNI changed: %d route repairs, %d known, %d programmed; want 1, %d, %d",
			st.DriftRepairs["route"], st.PeersKnown, st.PeersProgrammed, n, n-1)
	}
}

// BenchmarkReconciledUnchanged is the observer's record of a successful
// pass over the lease set of the last one, as the resync ticker and
// netlink events bring them, with the agent's memory limit and live heap
// (underAgentLimit).
func BenchmarkReconciledUnchanged(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, mib := range []int{0, 20} {
			b.Run(fmt.Sprintf("peers=%d/heap=%dMiB", n, mib), func(b *testing.B) {
				o := newObserver()
				own, peers := manyPeers(n)
				o.reconciled(own, peers, backend.Result{}, nil, time.Millisecond)
				underAgentLimit(b, mib, func() {
					for range b.N {
						o.reconciled(own, peers, backend.Result{}, nil, time.Millisecond)
					}
				})
			})
		}
	}
}
