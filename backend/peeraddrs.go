package backend

import (
	"net"
	"sync/atomic"

	"github.com/agentd/agentd/subnet"
	"github.com/vishvananda/netlink"
)

// PeerAddrs holds the public IPs and subnets of the peers a pass judged, for
// Watch to tell which address events can change its judgement: a peer is
// skipped while its public IP is an address of this host
// (Segment.RefuseHost) or its subnet holds one (Segment.LocalIn), and
// programmed once that address is gone. Such an address may sit on any
// link, and its coming or going need not touch a route in the cluster
// network (a /32, a link that is down, a public IP outside the network), so
// without PeerAddrs the peer would wait for the resync ticker. Any other
// address event (IPv6, the service addresses kube-proxy puts on
// kube-ipvs0, by the thousand) changes no judgement and wakes nothing.
//
// A pass calls Store before it lists the addresses
// (ReadSegment, or SegmentReader.Read, which reads the address events
// queued until then), and Watch's goroutine calls Concerns: an address
// changed after the listing is then judged against that pass's peers or a
// later one's, and one changed before it is seen by the listing. So the zero
// value, before the first pass, holds no peers and no event concerns it.
type PeerAddrs struct {
	// p is nil or a set never changed once stored.
	p atomic.Pointer[peerAddrs]
}

type peerAddrs struct {
	pubs    map[uint32]struct{} // big-endian (be32)
	subnets PrefixSet
}

// Store records the IPv4 public IPs and subnets of peers.
func (a *PeerAddrs) Store(peers []subnet.Lease) {
	p := &peerAddrs{pubs: make(map[uint32]struct{}, len(peers)), subnets: MakePrefixSet(len(peers))}
	for _, l := range peers {
		if pub := l.Attrs.PublicIP; pub.Is4() {
			p.pubs[be32(pub)] = struct{}{}
		}
		p.subnets.Add(l.Subnet)
	}
	a.p.Store(p)
}

// Concerns reports whether u, an address added or deleted, can change how a
// pass judges one of the stored peers: it is an IPv4 address that is a
// peer's public IP or lies in a peer's subnet.
func (a *PeerAddrs) Concerns(u netlink.AddrUpdate) bool {
	p := a.p.Load()
	if p == nil || len(u.LinkAddress.IP) != net.IPv4len {
		return false
	}
	addr, ok := AddrFromIP(u.LinkAddress.IP)
	if !ok {
		return false
	}
	_, pub := p.pubs[be32(addr)]
	return pub || p.subnets.Contains(addr)
}
