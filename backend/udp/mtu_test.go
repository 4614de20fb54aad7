package udp

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestExternalMTUFollowed: the underlay's MTU changes while the agent runs.
// Lowered from 1500 to 1400, flannel0 and MTU() follow it (1372) in the
// next pass, and a packet of that full size reaches the peer whole, in one
// datagram of the interface's MTU; raised to 9000 they follow it up (8972);
// each change is logged once. An interface too small for UDP encapsulation
// (90) leaves them as they are, said loudly once per change, and its end
// too. Before, flannel0 and MTU() kept 1472 until a restart and
// full-size packets left in IP fragments.
func TestExternalMTUFollowed(t *testing.T) {
	h := newTestHost(t)
	peerLease := lease("10.244.2.0/24", "198.18.0.2", Type)
	h.reconcile(peerLease)
	peer := h.udpFrom("198.18.0.2")
	setExtMTU := func(mtu int) {
		t.Helper()
		ext, err := h.host.Handle.LinkByName("ext0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.host.Handle.LinkSetMTU(ext, mtu); err != nil {
			t.Fatal(err)
		}
		if res := h.reconcile(peerLease); len(res.ByKind) != 0 {
			t.Errorf("ext0 at %d: the pass counted %v; following ext0 is no drift repair", mtu, res.ByKind)
		}
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
	has := func(extMTU, mtu int) {
		t.Helper()
		if line := fmt.Sprintf("link flannel0 tuntap up mtu %d", mtu); h.b.MTU() != mtu || !strings.Contains(h.host.State(t), line) {
			t.Fatalf("ext0 at %d: MTU() %d, state\n%s\nwant %d", extMTU, h.b.MTU(), h.host.State(t), mtu)
		}
	}
	const follows = "the external interface's MTU changed; the TUN device follows it"

	setExtMTU(1400)
	h.reconcile(peerLease)
	has(1400, 1372)
	if n := count(follows + `" "iface"="ext0" "ifaceMTU"=1400 "device"="flannel0" "was"=1472 "mtu"=1372`); n != 1 {
		t.Errorf("the change to 1372 logged %d times in two passes, want once", n)
	}
	if n := count("corrected the TUN device's MTU"); n != 0 {
		t.Errorf("following ext0 was logged as a correction of drift %d times", n)
	}

	// A packet of flannel0's full MTU, sent by the host into the overlay,
	// reaches the peer in one datagram.
	var c net.Conn
	if err := h.host.Do(func() (err error) { c, err = net.Dial("udp4", "10.244.2.5:9"); return err }); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, 1372-28)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2000)
	peer.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, _, err := peer.ReadFromUDPAddrPort(buf)
	if err != nil || n != 1372 {
		t.Fatalf("the peer got %d bytes (%v), want the whole 1372-byte packet", n, err)
	}
	if h, v := parseIPv4(buf[:n]); v != pass || h.dst != be32(netip.MustParseAddr("10.244.2.5")) {
		t.Fatalf("the peer got %x…, not the packet for 10.244.2.5", buf[:20])
	}

	setExtMTU(9000)
	has(9000, 8972)
	if n := count(follows); n != 2 {
		t.Errorf("%d changes logged after 1500 → 1400 → 9000, want 2", n)
	}

	const tooSmall = "EXTERNAL INTERFACE MTU TOO SMALL FOR UDP ENCAPSULATION"
	setExtMTU(90)
	h.reconcile(peerLease)
	has(90, 8972)
	if n := count(tooSmall); n != 1 {
		t.Errorf("%q logged %d times after ext0 went to 90 and two passes, want once", tooSmall, n)
	}
	setExtMTU(1500)
	has(1500, 1472)
	if n := count("leaves room for UDP encapsulation again"); n != 1 {
		t.Errorf("the end of ext0 at 90 said %d times, want once", n)
	}
}
