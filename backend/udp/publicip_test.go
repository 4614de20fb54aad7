package udp

import (
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
)

// TestPublicIPOnExternalInterface: --public-ip naming a second address of
// the external interface (--iface eth0 --public-ip <its other address>).
// Peers send to the public IP, and accept a datagram only from a peer's
// public IP; sockets bound to the interface's first address received none
// of what peers sent (the kernel answered port unreachable) and sent from
// an address the peers counted as unknownPeer: on a namespace cluster every
// ping was lost both ways, where vxlan and host-gw carried them.
//
//	ns "peer" 198.18.0.2 ── veth ── ns "host" ext0 198.18.0.1/24, 198.18.0.9/24 (public IP)
func TestPublicIPOnExternalInterface(t *testing.T) {
	public := netip.MustParseAddr("198.18.0.9")
	h := newTestHost(t, func(h *testHost) {
		ext, err := h.host.Handle.LinkByName("ext0")
		if err != nil {
			t.Fatal(err)
		}
		if err := h.host.Handle.AddrAdd(ext, &netlink.Addr{IPNet: backend.IPNet(netip.PrefixFrom(public, 24))}); err != nil {
			t.Fatal(err)
		}
		h.cfg.External.PublicIP = public
		h.own = lease("10.244.1.0/24", public.String(), Type)
	})
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))

	peer := h.udpFrom("198.18.0.2")
	to := netip.AddrPortFrom(public, DefaultPort)
	if _, err := peer.WriteToUDPAddrPort(echoRequest("10.244.2.5", "10.244.1.0", 1), to); err != nil {
		t.Fatal(err)
	}
	expectReplyFrom(t, peer, 1, to)
}

// TestPublicIPBehindNAT: a public IP that is no address of the host (NAT
// turns the interface address into it) leaves the sockets on the interface
// address, the only one datagrams can reach.
func TestPublicIPBehindNAT(t *testing.T) {
	h := newTestHost(t, func(h *testHost) {
		h.cfg.External.PublicIP = netip.MustParseAddr("198.19.7.7")
		h.own = lease("10.244.1.0/24", "198.19.7.7", Type)
	})
	h.reconcile(lease("10.244.2.0/24", "198.18.0.2", Type))
	peer := h.udpFrom("198.18.0.2")
	if _, err := peer.WriteToUDP(echoRequest("10.244.2.5", "10.244.1.0", 1), hostAddr); err != nil {
		t.Fatal(err)
	}
	expectReply(t, peer, 1)
}
