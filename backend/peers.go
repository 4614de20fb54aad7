package backend

import (
	"fmt"
	"net/netip"

	"github.com/agentd/agentd/subnet"
)

// OnePerSubnet returns peers with one lease per IPv4 subnet, in peers'
// order, and records in skips each lease it leaves out, naming the one it
// keeps. Two keys can name one IPv4 subnet (a plain key and a dual-stack
// one, or keys written by hand); of those it keeps the one written last,
// the highest ModRevision, since that is what the subnet's host said most
// recently; on a tie, the smaller key, so that the choice does not depend
// on the order of peers. Without this the first in peers would win, which
// the watch's order makes the plain key whatever its age, and a backend
// keying some objects otherwise (vxlan's FDB entries, by MAC) would program
// them for both.
func OnePerSubnet(peers []subnet.Lease, skips *SkipLog) []subnet.Lease {
	winner := make(map[netip.Prefix]int, len(peers))
	dup := false
	for i := range peers {
		sn := peers[i].Subnet.Masked()
		if !sn.IsValid() {
			continue // the backend says why it skips it
		}
		w, seen := winner[sn]
		if !seen {
			winner[sn] = i
			continue
		}
		dup = true
		if newer(&peers[i], &peers[w]) {
			winner[sn] = i
		}
	}
	if !dup {
		return peers
	}
	kept := make([]subnet.Lease, 0, len(winner))
	for i := range peers {
		w, ok := winner[peers[i].Subnet.Masked()]
		if !ok || w == i {
			kept = append(kept, peers[i])
			continue
		}
		skips.Skip(peers[i].Key(), fmt.Sprintf("superseded by the lease %s for the same IPv4 subnet (the one written last wins)", peers[w].Key()))
	}
	return kept
}

// newer reports whether a is preferred to b for the same subnet.
func newer(a, b *subnet.Lease) bool {
	if a.ModRevision != b.ModRevision {
		return a.ModRevision > b.ModRevision
	}
	return a.Key() < b.Key()
}
