package udp

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestExternalMTULoweredReported: the underlay's MTU is lowered while the
// agent runs (1500 to 1400, under flannel0's 1472 + 28). flannel0 and
// subnet.env keep 1472 until a restart, and a full-size packet still
// reaches the peer, in IP fragments; that is said once, loudly, as the
// vxlan backend says it, and said again only when the MTU changes, and its
// end when the MTU leaves room again. Before, nothing was logged at all.
func TestExternalMTULoweredReported(t *testing.T) {
	h := newTestHost(t)
	peerLease := lease("10.244.2.0/24", "198.18.0.2", Type)
	h.reconcile(peerLease)
	peer := h.udpFrom("198.18.0.2")
	const tooSmall = "EXTERNAL INTERFACE MTU TOO SMALL"
	setExtMTU := func(mtu int) {
		t.Helper()
		ext, err := h.host.Handle.LinkByName("ext0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.host.Handle.LinkSetMTU(ext, mtu); err != nil {
			t.Fatal(err)
		}
		h.reconcile(peerLease)
	}
	count := func(sub string) int {
		h.mu.Lock()
		defer h.mu.Unlock()
		n := 0
		for _, l := range h.logs {
			if strings.Contains(l, sub) {
				n++
			}
		}
		return n
	}

	setExtMTU(1400)
	h.reconcile(peerLease)
	if n := count(tooSmall); n != 1 {
		t.Fatalf("%q logged %d times after the underlay's MTU went to 1400 and two passes, want once", tooSmall, n)
	}
	if !h.logged(`"ifaceMTU"=1400`) {
		t.Errorf("the report does not name the interface's MTU 1400")
	}
	if h.b.MTU() != 1472 || !strings.Contains(h.host.State(t), "flannel0 tuntap up mtu 1472") {
		t.Fatalf("MTU %d, state\n%s\nwant 1472 kept until a restart", h.b.MTU(), h.host.State(t))
	}

	// A packet of flannel0's full MTU, sent by the host into the overlay,
	// reaches the peer: its datagram (1500 bytes) leaves in fragments.
	var c net.Conn
	if err := h.host.Do(func() (err error) { c, err = net.Dial("udp4", "10.244.2.5:9"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 1472-28)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || n != 1472 {
		t.Fatalf("the peer got %d bytes (%v), want the whole 1472-byte packet", n, err)
	}
	if h, v := parseIPv4(buf[:n]); v != pass || h.dst != be32(netip.MustParseAddr("10.244.2.5")) {
		t.Fatalf("the peer got %x…, not the packet for 10.244.2.5", buf[:20])
	}

	setExtMTU(1300)
	if n := count(tooSmall); n != 2 {
		t.Errorf("%q logged %d times after a second change (1300), want twice in all", tooSmall, n)
	}
	setExtMTU(1500)
	if !h.logged("leaves room for the TUN device's again") {
		t.Errorf("nothing said once the underlay's MTU was 1500 again")
	}
	setExtMTU(1400)
	if n := count(tooSmall); n != 3 {
		t.Errorf("%q logged %d times after the MTU was lowered again, want 3 in all", tooSmall, n)
	}
}
