package subnet

import (
	"context"
	"slices"
	"strings"
)

// fullListEvery is how many reads of one Acquire make one full list: the
// others read only the keys written since the read before.
const fullListEvery = 4

// leaseView is Acquire's picture of the keys under the subnets prefix: a
// full list, brought up to date after each lost race by the keys written
// since (etcd sends those alone: a few hundred bytes, where a full list of
// 5000 leases is a megabyte, read again by every loser of every round of a
// storm). It misses keys deleted since the full list: their subnets look
// taken until the next full list, which comes every fullListEvery reads,
// after our own lease changed under a takeover (it may be gone), and before
// the pool is called full. The create's transaction, not the view, decides
// who gets a subnet.
type leaseView struct {
	reg    *Registry
	byKey  map[string]entry
	leases []Lease
	bad    []BadEntry
	rev    int64
	// since counts the reads since the full list; full asks for a full
	// list next.
	since int
	full  bool
}

// entry is one key of the view: a lease, or a key that is not one (bad set).
type entry struct {
	lease Lease
	bad   *BadEntry
}

// read brings the view up to date: a full list when it has none, when one is
// asked for (full) or due, else the keys written since the last read.
func (v *leaseView) read(ctx context.Context) error {
	partial := v.byKey != nil && !v.full && v.since+1 < fullListEvery
	since := int64(0)
	if partial {
		since = v.rev
	}
	keys, hdr, err := v.reg.listKeys(ctx, since)
	if err != nil {
		return err
	}
	// flanneld hosts lease around these too: so does Acquire.
	sib, err := v.reg.siblingKeys(ctx, hdr.Revision, since)
	if err != nil {
		return err
	}
	keys = append(keys, sib...)
	if partial {
		v.since++
	} else {
		v.byKey, v.since, v.full = make(map[string]entry, len(keys)), 0, false
	}
	v.rev = hdr.Revision
	for i := range keys {
		e := entry{lease: keys[i].lease}
		if keys[i].err != nil {
			bad := keys[i].badEntry()
			e = entry{bad: &bad}
		}
		v.byKey[keys[i].key] = e
	}
	v.leases, v.bad = v.leases[:0], v.bad[:0]
	for _, e := range v.byKey {
		if e.bad != nil {
			v.bad = append(v.bad, *e.bad)
		} else {
			v.leases = append(v.leases, e.lease)
		}
	}
	sortLeases(v.leases)
	slices.SortFunc(v.bad, func(a, b BadEntry) int { return strings.Compare(a.Key, b.Key) })
	return nil
}

// partial reports whether the view may hold keys deleted since they were read.
func (v *leaseView) partial() bool { return v.since > 0 }
