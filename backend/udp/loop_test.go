package udp

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestPublicIPInsideOverlay: a lease whose public IP lies in a subnet of
// the overlay (a node started with --public-ip set to its flannel address,
// or whose interface detection picked its bridge) is skipped, as other
// leases with a public IP that cannot be reached are. Programmed, it made
// a forwarding loop: a datagram for that address follows the network's
// route into flannel0, where the datapath finds the same peer and sends it
// again, 28 bytes larger, for ever (the outer TTL starts afresh at each
// pass, and a datagram too large for flannel0 is cut into fragments that
// each go round). One packet for the peer's subnet kept the datapath
// sending tens of thousands of datagrams a second until the lease went.
func TestPublicIPInsideOverlay(t *testing.T) {
	t.Run("desired", func(t *testing.T) {
		b := testBackend(t)
		own := lease("10.244.1.0/24", "198.18.0.1", Type)
		got := b.desired(own, []subnet.Lease{
			lease("10.244.2.0/24", "198.18.0.2", Type),
			lease("10.244.3.0/24", "10.244.3.1", Type), // its own subnet
			lease("10.244.4.0/24", "10.244.2.9", Type), // another peer's
			lease("10.244.5.0/24", "10.244.1.7", ""),   // ours
		}, testSegment())
		want := []entry{{netip.MustParsePrefix("10.244.2.0/24"), netip.MustParseAddrPort("198.18.0.2:8285")}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("desired\n got %v\nwant %v", got, want)
		}
		if n := b.skips.Finish(); n != 3 {
			t.Fatalf("%d leases skipped, want 3", n)
		}
	})

	t.Run("no loop", func(t *testing.T) {
		h := newTestHost(t)
		h.reconcile(lease("10.244.2.0/24", "10.244.2.1", Type))
		// The packet is answered with a net-unreachable, as for any
		// subnet no host can be reached at, and the error reaches the
		// sender: it did not go round through flannel0 either.
		expectNetUnreachable(t, h, netip.MustParseAddrPort("10.244.2.5:9"))
		deadline := time.Now().Add(2 * time.Second)
		for h.b.Stats().Dropped["noRoute"] == 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		s := h.b.Stats()
		if s.Sent != 0 || s.Dropped["noRoute"] != 1 {
			t.Fatalf("one packet for 10.244.2.5: %d datagrams sent, %d noRoute drops; want 0 and 1 (stats %+v)", s.Sent, s.Dropped["noRoute"], s)
		}
		if !h.logged("lies in an overlay subnet") {
			t.Errorf("the skipped lease was not logged")
		}
	})
}
