package subnet

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/internal/etcdhistory"
	"github.com/agentd/agentd/internal/lograte"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerTable is the lease set as the watch last saw it. The watch goroutine
// writes it; readers take a snapshot with Peers.
//
// Snapshots are copy-on-write: a slice handed out by Peers is never written
// again, so readers use it without the lock. A new one is built lazily, when a
// reader asks after a change, so a burst of events costs one build per reader
// wake-up rather than one per event. The build is incremental: the keys that
// changed since the last snapshot are sorted and merged into it: for k changes
// that is one copy of the n-entry snapshot plus O(k log n), instead of a sort of
// the whole set. Only a relist, or so many changes that a sort would cost no
// more, sorts everything again.
type peerTable struct {
	mu     sync.Mutex
	leases map[string]Lease // by full key, our own excluded
	// bad maps keys that are not usable leases to the revision logged.
	bad map[string]int64
	// badLog bounds the lines about them: a forced change of Network, or
	// a tool writing junk, makes thousands at once.
	badLog *lograte.Limiter
	own    ownState
	// rewound is set by a list that found etcd's history replaced (its
	// revision went backwards, or another cluster answers) and cleared by
	// Run's goroutine when it takes own: the revisions of our lease belong
	// to the old history and say nothing about own.
	rewound bool
	// rev is the revision the table is exact at: the last list's, or the
	// last event's applied since (all events up to it are in).
	rev int64

	// carried holds the keys of the peers that a list from a new history
	// of etcd, or after a compaction, lacked (see carryLocked): kept in
	// leases, though not in etcd, until their agents write them again,
	// another host's lease overlaps them, or carryEnd fires. carryGen
	// tells carryEnd's firing from an earlier, stopped one's;
	// carryCompacted says the last carry began after a compaction.
	carried        map[string]struct{}
	carryEnd       *time.Timer
	carryGen       int
	carryCompacted bool

	// snap is the last snapshot, sorted by peerOrder; nil before the first.
	// Unless rebuild is set, snap plus the changes listed in pending equals
	// leases.
	snap []Lease
	// pending lists the keys written or deleted since snap was built, in
	// event order, possibly more than once.
	pending []peerChange
	// rebuild says snap must be rebuilt from leases rather than merged.
	rebuild bool
}

// peerChange names a key whose lease changed since the last snapshot. id is
// derived from the key, so it is the same for every version of the lease.
type peerChange struct {
	id  peerID
	key string
}

// peerID is the sort key of a lease. Lease keys are canonical spellings of
// their prefixes (see ParseSubnetKey), so no two keys share a peerID.
type peerID struct{ sn, sn6 netip.Prefix }

func idOf(l *Lease) peerID { return peerID{l.Subnet, l.IPv6Subnet} }

// peerOrder orders by IPv4 subnet, then by IPv6 subnet (none first), so that
// two dual-stack keys sharing an IPv4 subnet still have a fixed order.
func peerOrder(a, b peerID) int {
	if c := comparePrefix(a.sn, b.sn); c != 0 {
		return c
	}
	return comparePrefix(a.sn6, b.sn6)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

// touchLocked records that the lease under key changed (written or deleted).
func (t *peerTable) touchLocked(key string, id peerID) {
	if t.rebuild || t.snap == nil {
		return
	}
	// Past about a quarter of the set, sorting everything once is no dearer
	// than merging, and pending stays bounded however long nobody reads.
	if len(t.pending) >= len(t.leases)/4+16 {
		t.rebuild = true
		t.pending = t.pending[:0]
		return
	}
	t.pending = append(t.pending, peerChange{id: id, key: key})
}

// snapshotLocked returns a snapshot equal to leases, building a new one if
// anything changed since the last.
func (t *peerTable) snapshotLocked() []Lease {
	switch {
	case t.rebuild || t.snap == nil:
		snap := make([]Lease, 0, len(t.leases))
		for _, l := range t.leases {
			snap = append(snap, l)
		}
		slices.SortFunc(snap, func(a, b Lease) int { return peerOrder(idOf(&a), idOf(&b)) })
		t.snap = snap
	case len(t.pending) > 0:
		t.snap = t.mergeLocked()
	}
	t.pending = t.pending[:0]
	t.rebuild = false
	return t.snap
}

// mergeLocked builds a new snapshot from the old one and the pending keys: the
// runs of unchanged leases between changed keys are copied as they are, and
// each changed key contributes its current lease, if it still has one.
func (t *peerTable) mergeLocked() []Lease {
	ch := t.pending
	slices.SortFunc(ch, func(a, b peerChange) int { return peerOrder(a.id, b.id) })
	ch = slices.CompactFunc(ch, func(a, b peerChange) bool { return a.id == b.id })
	old := t.snap
	snap := make([]Lease, 0, len(t.leases))
	i := 0
	for _, c := range ch {
		j, found := slices.BinarySearchFunc(old[i:], c.id, func(l Lease, id peerID) int { return peerOrder(idOf(&l), id) })
		snap = append(snap, old[i:i+j]...)
		i += j
		if found {
			i++
		}
		if l, ok := t.leases[c.key]; ok {
			snap = append(snap, l)
		}
	}
	return append(snap, old[i:]...)
}

// ownState is what the watch last saw of our own key.
type ownState struct {
	// rev is the key's ModRevision when present, else the revision its
	// absence was seen at. States no newer than our own last write are
	// stale, and a restore writes our value back only if the key is still
	// at rev. It is never a list's revision: that is the revision of the
	// whole store, not of the key, and a compare on it always fails.
	rev       int64
	present   bool
	lease     Lease // valid when present and err is nil
	err       error // the value could not be used
	createRev int64
}

// Peers returns every lease but our own, sorted by subnet. The slice is shared
// and must not be modified; it is never modified by the watch either, so it
// stays a consistent snapshot for as long as the caller holds it.
func (m *Manager) Peers() []Lease {
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snapshotLocked()
}

// UnusableKeys is how many keys under the subnets prefix, other than our
// own, the watch skips now as not usable leases, and how many beside it
// flanneld reads as leases (flanneldSiblings): the keys agentctl leases
// lists as invalid. Stats.BadEntries counts their writes. A key fixed or
// deleted leaves it, and so does a key beside the prefix whose value
// flanneld skips.
func (m *Manager) UnusableKeys() int {
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.bad)
}

// PeersChanged is signalled whenever Peers may return a different set.
// Signals coalesce: one wake-up may stand for many events.
func (m *Manager) PeersChanged() <-chan struct{} { return m.changed }

// PeersSynced is closed once Peers reflects a full list of etcd, so that
// readiness can wait for the first peer snapshot to be programmed.
func (m *Manager) PeersSynced() <-chan struct{} { return m.synced }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// watchLoop keeps the table equal to etcd: a full list, then a watch from the
// list's revision; when the watch breaks (compaction, lost leader, closed
// stream, etcd's history replaced) it lists again and diffs. It returns when
// ctx is done.
func (m *Manager) watchLoop(ctx context.Context) {
	defer m.stopCarry()
	b := delay.Backoff{Min: 200 * time.Millisecond, Max: 10 * time.Second}
	var failing error
	// replaced is set when a read found etcd's history replaced, which the
	// next list may not see: its revision is not below ours, or no longer
	// is once writes of the new history passed it.
	var replaced error
	// compacted is set when the watch could not resume: the revision
	// after the last it delivered was compacted.
	compacted := false
	// Our own last write (Acquire's) is in etcd's history, so the first
	// list, linearizable, is at its revision or later: one below it comes
	// from a new history (etcd restored from an older snapshot, or emptied,
	// between Acquire and that list), where our key may be missing and
	// nothing else would say so.
	own, _ := m.Own()
	h := etcdhistory.History{Rev: own.ModRevision}
	for ctx.Err() == nil {
		err := m.relist(ctx, &h, replaced, compacted)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failing == nil {
				m.log.Error(err, "cannot list leases; retrying until etcd answers")
			}
			failing = err
			_ = delay.Sleep(ctx, b.Next())
			continue
		}
		if failing != nil {
			m.log.Info("listing leases works again")
			failing = nil
		}
		replaced, compacted = nil, false
		started := m.cfg.Clock()
		err = m.watchFrom(ctx, &h)
		if ctx.Err() != nil {
			return
		}
		// A watch that lived a while broke by chance: list again soon. One
		// that ends as soon as it starts (a member without a leader, which
		// the watch's WithRequireLeader makes it refuse, while another
		// answers the list) would otherwise cost a list of every lease 5
		// times a second for as long as that lasts: it backs off to Max.
		if m.cfg.Clock().Sub(started) >= b.Max {
			b.Reset()
		}
		if errors.Is(err, errKeysDiffer) || errors.Is(err, errReadReplaced) {
			replaced = err
		}
		compacted = errors.Is(err, errWatchCompacted)
		m.Stats.Relists.Add(1)
		m.log.Info("lease watch ended; listing all leases again", "reason", err)
		_ = delay.Sleep(ctx, b.Next())
	}
}

// errKeysDiffer is wrapped by checkWitness's error too. A list cannot see
// what it found: the revision has not gone backwards.
var errKeysDiffer = errors.New("etcd's keys differ from the watch's at the same revision")

// errReadReplaced is wrapped by watchReconnects' error when the revision of
// its read is below the watch's, or the cluster another: the read is
// linearizable, which no member behind the others answers, so the history is
// new. The list after it comes 200 ms or more later, when the agents that
// found the new history too may have written their keys again, taking its
// revision past ours: by then only this error says what the list is of.
var errReadReplaced = errors.New("read after a reconnect")

// errWatchCompacted is wrapped by watchFrom's error when the watch cannot
// resume because its next revision was compacted.
var errWatchCompacted = errors.New("the lease watch's next revision was compacted")

// relist replaces the table with a fresh list and moves h to its revision.
// known, when not nil, says the watch found etcd's history replaced;
// compacted, that the watch ended on a compaction.
func (m *Manager) relist(ctx context.Context, h *etcdhistory.History, known error, compacted bool) error {
	keys, hdr, err := m.reg.listKeys(ctx, 0)
	if err != nil {
		return err
	}
	// The keys beside the prefix that flanneld reads as leases, at the
	// same revision: the watch from it sees them change.
	sib, err := m.reg.siblingKeys(ctx, hdr.Revision, 0)
	if err != nil {
		return err
	}
	keys = append(keys, sib...)
	// A list is linearizable: a revision below one seen before is not a
	// member lagging behind.
	replaced := h.Check(hdr)
	if replaced == nil {
		replaced = known
	}
	*h = etcdhistory.History{Rev: hdr.Revision, Cluster: hdr.ClusterId}
	n, kept := m.listed(keys, h.Rev, replaced != nil, compacted)
	switch {
	case replaced != nil:
		kv := []any{"peersListed", n - len(kept)}
		if len(kept) > 0 {
			kv = append(kv, "peersNotInIt", len(kept), "keptFor", m.cfg.NewHistoryGrace, "kept", clip.String(strings.Join(kept, " ")))
		}
		m.log.Error(replaced, "ETCD LOST ITS HISTORY; taking every lease, ours included, from this list", kv...)
	case len(kept) > 0:
		m.log.Info("peers missing from the list after the compaction keep their routes meanwhile, in case etcd was restored from a snapshot that lacks their keys",
			"peersListed", n-len(kept), "peersNotInIt", len(kept), "keptFor", m.cfg.NewHistoryGrace, "kept", clip.String(strings.Join(kept, " ")))
	}
	m.log.V(2).Info("listed leases", "peers", n, "revision", h.Rev)
	m.syncedOnce.Do(func() { close(m.synced) })
	signal(m.changed)
	return nil
}

// listed makes the table the full list of keys read at revision rev and
// returns the number of peers and, when rewound or compacted, the subnets of
// those among them that the list lacked and the table carries (see
// carryLocked). A list that may come from a new history of etcd (rewound)
// tells Run to judge our key by its value alone.
func (m *Manager) listed(keys []keyState, rev int64, rewound, compacted bool) (int, []string) {
	ownKey := m.ownKeyString()
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	if rewound {
		t.rewound = true
	}
	t.rev = rev
	old, oldCarried := t.leases, t.carried
	t.leases = make(map[string]Lease, len(keys))
	t.carried = nil
	// Everything may have changed: the next snapshot is sorted afresh, and
	// putLocked need not record each key.
	t.rebuild = true
	t.pending = t.pending[:0]
	sawOwn := false
	for i := range keys {
		k := &keys[i]
		if k.key == ownKey {
			sawOwn = true
			m.noteOwnLocked(k)
			continue
		}
		m.putLocked(k, old[k.key])
	}
	kept := m.carryLocked(old, oldCarried, rewound || compacted)
	if len(kept) > 0 {
		t.carryCompacted = !rewound
	}
	if !sawOwn && ownKey != "" {
		t.own = ownState{rev: rev}
		signal(m.ownChanged)
	}
	// Forget the unusable keys that are gone. One set of the listed keys,
	// not a scan of the list per unusable key: after a forced change of
	// Network every old lease is one (BenchmarkRelistUnusable).
	if len(t.bad) > 0 {
		listedKeys := make(map[string]struct{}, len(keys))
		for i := range keys {
			listedKeys[keys[i].key] = struct{}{}
		}
		for k := range t.bad {
			if _, ok := listedKeys[k]; !ok {
				delete(t.bad, k)
			}
		}
	}
	return len(t.leases), kept
}

// carryLocked puts back into the table, just made from a list, the leases
// of old (the table before it) that the list lacked: every one when the
// list comes from a new history of etcd (fresh), else those oldCarried
// already carried. When fresh, it returns the subnets of those it carries
// and starts the grace at whose end the ones still carried go.
//
// After etcd lost its data, or was restored from an older snapshot, the
// keys written since are gone until their agents write them again, each when
// it finds the new history: when its connection to etcd comes back, up to
// the gRPC reconnect backoff's 5 s (plus jitter) after another's. Taking the
// list as it is would remove the routes to those hosts meanwhile, and cut
// the traffic to them that etcd is not on the path of. A lease that overlaps
// one the list holds is not carried: another host holds that subnet now.
// No key is written: etcd is what the hosts say it is.
//
// A list after a compaction (the watch could not resume) is fresh too: etcd
// restored with etcdutl's --bump-revision and --mark-compacted looks like
// that, and nothing tells a key the snapshot lacks from one deleted while
// the watch was away. Such a deleted peer keeps its routes for the grace: it
// was gone already, and a host that takes its subnet meanwhile replaces it.
func (m *Manager) carryLocked(old map[string]Lease, oldCarried map[string]struct{}, fresh bool) (kept []string) {
	t := &m.table
	var listed []netip.Prefix
	for k, l := range old {
		if _, ok := t.leases[k]; ok {
			continue
		}
		_, was := oldCarried[k]
		if !fresh && !was {
			continue
		}
		if listed == nil {
			listed = make([]netip.Prefix, 0, len(t.leases))
			for ck, cl := range t.leases {
				if _, c := t.carried[ck]; !c {
					listed = append(listed, cl.Subnet)
				}
			}
		}
		if slices.ContainsFunc(listed, l.Subnet.Overlaps) {
			continue
		}
		if t.carried == nil {
			t.carried = map[string]struct{}{}
		}
		t.leases[k], t.carried[k] = l, struct{}{}
		if fresh {
			kept = append(kept, l.Subnet.String())
		}
	}
	slices.Sort(kept)
	if fresh && len(kept) > 0 {
		if t.carryEnd != nil {
			t.carryEnd.Stop()
		}
		t.carryGen++
		gen := t.carryGen
		t.carryEnd = time.AfterFunc(m.cfg.NewHistoryGrace, func() { m.endCarry(gen) })
	}
	return kept
}

// endCarry ends the grace that carryLocked's call gen started: the leases
// still carried, whose keys nobody wrote again, leave the table.
func (m *Manager) endCarry(gen int) {
	t := &m.table
	t.mu.Lock()
	if gen != t.carryGen {
		t.mu.Unlock()
		return
	}
	var gone []string
	for k := range t.carried {
		gone = append(gone, t.leases[k].Subnet.String())
	}
	if len(gone) == 0 {
		t.carried, t.carryEnd = nil, nil
		t.mu.Unlock()
		m.log.V(2).Info("every peer lease missing from etcd's new history was written again")
		return
	}
	// The line first, with the table still locked: a pass that reads
	// the table without these peers, and removes their routes, comes
	// after it in the log.
	slices.Sort(gone)
	msg := "removing the peers whose lease keys etcd lost and nobody wrote again"
	if t.carryCompacted {
		msg = "removing the peers missing from the list after the compaction that nobody wrote again"
	}
	m.log.Info(msg, "peers", len(gone), "after", m.cfg.NewHistoryGrace, "subnets", clip.String(strings.Join(gone, " ")))
	for k := range t.carried {
		l := t.leases[k]
		delete(t.leases, k)
		t.touchLocked(k, idOf(&l))
	}
	t.carried, t.carryEnd = nil, nil
	t.mu.Unlock()
	signal(m.changed)
}

// stopCarry stops the grace of the carried leases, if one runs: they stay
// in the table, which nothing reads once Run has returned.
func (m *Manager) stopCarry() {
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.carryEnd != nil {
		t.carryEnd.Stop()
	}
	t.carryGen++
}

// uncarryLocked ends the carry of key, written again as l, and of every
// carried lease l overlaps: another host holds that subnet now.
func (m *Manager) uncarryLocked(key string, l *Lease) {
	t := &m.table
	delete(t.carried, key)
	for k := range t.carried {
		if c := t.leases[k]; c.Subnet.Overlaps(l.Subnet) {
			m.log.V(2).Info("peer lease missing from etcd's new history replaced by an overlapping one",
				"subnet", c.Subnet, "publicIP", c.Attrs.PublicIP, "by", l.Subnet, "byPublicIP", l.Attrs.PublicIP)
			delete(t.leases, k)
			delete(t.carried, k)
			t.touchLocked(k, idOf(&c))
		}
	}
}

// watchFrom applies events from revision h.Rev+1 on until the watch breaks,
// or until an answer shows that etcd's history was replaced. Answers are
// checked against h, and h follows them.
//
// The watch asks for progress notifications, so that even a quiet watch
// hears the current revision now and then (every 10 minutes by etcd's
// default). A new history is found sooner by a read after each reconnect: a
// restarted etcd always means one (see watchReconnects).
func (m *Manager) watchFrom(ctx context.Context, h *etcdhistory.History) error {
	wctx, cancel := context.WithCancelCause(clientv3.WithRequireLeader(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	var seen atomic.Int64 // h.Rev, for watchReconnects
	seen.Store(h.Rev)
	start := *h
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.watchReconnects(wctx, start, &seen); err != nil {
			cancel(err)
		}
	}()
	rev := h.Rev + 1
	// <prefix>/subnets with no slash after it, as flanneld watches: the
	// one watch sees the keys beside <prefix>/subnets/ too
	// (flanneldSiblings), and costs no request more than one of
	// <prefix>/subnets/ alone.
	wch := m.reg.cli.Watch(wctx, m.reg.flanneldRange(), clientv3.WithPrefix(), clientv3.WithRev(rev),
		clientv3.WithProgressNotify())
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("%w: revision %d (oldest kept: %d)", errWatchCompacted, rev, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if err := h.Check(resp.Header); err != nil {
			return err
		}
		if r := resp.Header.Revision; r > h.Rev {
			h.Rev = r
			seen.Store(r)
		}
		if len(resp.Events) == 0 {
			continue // progress notification
		}
		// Keys that are not usable leases change no peer: a script
		// writing junk must not wake a reconcile pass over every peer
		// per write.
		if m.applyEvents(resp.Events) {
			signal(m.changed)
		}
		rev = resp.Header.Revision + 1
	}
	if err := context.Cause(wctx); err != nil && ctx.Err() == nil {
		return err
	}
	return errors.New("watch stream closed")
}

// watchReconnects waits for the client's connection to etcd to drop and come
// back, and then reads the current revision: below the highest one the watch
// had seen before the read (seen), or from another cluster than h's, it is
// a new history, returned as an error wrapping etcdhistory.ErrReplaced. A
// new history that has passed seen by then (etcd emptied or restored while
// this host could not reach it) is found by checkWitness. It returns nil
// when ctx is done. Two reads per reconnect, nothing while connected.
func (m *Manager) watchReconnects(ctx context.Context, h etcdhistory.History, seen *atomic.Int64) error {
	conn := m.reg.cli.ActiveConnection()
	for {
		if !etcdhistory.Reconnected(ctx, conn) {
			return nil
		}
		// Read after loading seen: a linearizable read then returns at
		// least seen, unless the history is new.
		h.Rev = seen.Load()
		resp, err := m.reg.cli.Get(ctx, m.reg.ConfigKey(), clientv3.WithCountOnly())
		if err != nil {
			// The watch breaks, or the next reconnect reads again.
			m.log.V(2).Info("reading etcd's revision after a reconnect failed", "err", err)
			continue
		}
		if err := h.Check(resp.Header); err != nil {
			return fmt.Errorf("%w: %w", errReadReplaced, err)
		}
		if err := m.checkWitness(ctx, m.witness()); err != nil {
			if errors.Is(err, etcdhistory.ErrReplaced) {
				return err
			}
			m.log.V(2).Info("comparing etcd's keys with the watch's after a reconnect failed", "err", err)
		}
	}
}

// witness is what the table says etcd held at revision rev: the number of
// keys under the subnets prefix, and the ModRevision (0: absent) of our own
// key and of the newest key. Read again at rev, in the same history, etcd
// returns the same; in a new history that has already passed rev (etcd
// emptied or restored while we could not reach it, and written to since),
// hardly ever: our key is missing or was written at another revision, the
// newest key too, or keys were added.
type witness struct {
	rev   int64
	count int64
	keys  map[string]int64
}

func (m *Manager) witness() witness {
	ownKey := m.ownKeyString()
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	w := witness{rev: t.rev, keys: make(map[string]int64, 2)}
	newest, newestRev := "", int64(0)
	note := func(key string, rev int64) {
		if rev > newestRev {
			newest, newestRev = key, rev
		}
	}
	// Carried leases are not in etcd (see carryLocked).
	for k, l := range t.leases {
		if _, ok := t.carried[k]; !ok {
			note(k, max(l.ModRevision, t.bad[k]))
		}
	}
	// Keys beside the prefix are not counted under it.
	for k, rev := range t.bad {
		if _, ok := t.leases[k]; !ok && m.reg.under(k) {
			w.count++
			note(k, rev)
		}
	}
	w.count += int64(len(t.leases) - len(t.carried))
	if ownKey != "" {
		w.keys[ownKey] = 0
		if t.own.present {
			w.count++
			w.keys[ownKey] = t.own.rev
			note(ownKey, t.own.rev)
		}
	}
	if newest != "" {
		w.keys[newest] = newestRev
	}
	return w
}

// checkWitness reads at w.rev what w holds and returns an error wrapping
// etcdhistory.ErrReplaced if etcd answers otherwise. A revision compacted
// since proves nothing: it returns nil (a watch resumed below it fails by
// itself).
// One read of a count and at most two keys: no list on every reconnect.
func (m *Manager) checkWitness(ctx context.Context, w witness) error {
	at := clientv3.WithRev(w.rev)
	ops := []clientv3.Op{clientv3.OpGet(m.reg.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly(), at)}
	keys := make([]string, 0, len(w.keys))
	for k := range w.keys {
		keys = append(keys, k)
		ops = append(ops, clientv3.OpGet(k, at))
	}
	resp, err := m.reg.cli.Txn(ctx).Then(ops...).Commit()
	switch {
	case errors.Is(err, rpctypes.ErrFutureRev):
		return fmt.Errorf("%w: %w: revision %d is in etcd's future", etcdhistory.ErrReplaced, errKeysDiffer, w.rev)
	case errors.Is(err, rpctypes.ErrCompacted):
		return nil
	case err != nil:
		return fmt.Errorf("read etcd's keys at revision %d: %w", w.rev, err)
	}
	if n := resp.Responses[0].GetResponseRange().Count; n != w.count {
		return fmt.Errorf("%w: %w: at revision %d, %d keys under %s, the watch saw %d",
			etcdhistory.ErrReplaced, errKeysDiffer, w.rev, n, m.reg.SubnetsPrefix(), w.count)
	}
	for i, k := range keys {
		got := int64(0)
		if kvs := resp.Responses[i+1].GetResponseRange().Kvs; len(kvs) > 0 {
			got = kvs[0].ModRevision
		}
		if got != w.keys[k] {
			return fmt.Errorf("%w: %w: at revision %d, key %s last written at revision %d, the watch saw %d (0: absent)",
				etcdhistory.ErrReplaced, errKeysDiffer, w.rev, clip.String(k), got, w.keys[k])
		}
	}
	return nil
}

// applyEvents applies evs to the table and reports whether they may change
// what Peers or Own return: false when every event was about keys that are
// not usable leases, and left the leases as they were.
func (m *Manager) applyEvents(evs []*clientv3.Event) (changed bool) {
	ownKey := m.ownKeyString()
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range evs {
		m.Stats.WatchEvents.Add(1)
		key := string(ev.Kv.Key)
		m.log.V(4).Info("lease event", "type", ev.Type.String(), "key", clip.String(key), "revision", ev.Kv.ModRevision)
		if key == ownKey {
			changed = true
			if ev.Type == mvccpb.DELETE {
				t.own = ownState{rev: ev.Kv.ModRevision}
				signal(m.ownChanged)
			} else {
				k := m.reg.keyState(ev.Kv)
				m.noteOwnLocked(&k)
			}
			continue
		}
		if ev.Type == mvccpb.DELETE {
			if l, ok := t.leases[key]; ok {
				m.log.V(2).Info("peer lease removed", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP)
				delete(t.leases, key)
				t.touchLocked(key, idOf(&l))
				changed = true
			}
			delete(t.bad, key)
			delete(t.carried, key)
			continue
		}
		k := m.reg.keyState(ev.Kv)
		if !m.reg.under(key) && !errors.As(k.err, new(*FlanneldLeaseError)) {
			// Beside the prefix, a key flanneld skips is no lease to
			// anyone (siblingKeys): not counted, whatever it was.
			delete(t.bad, key)
			continue
		}
		if m.putLocked(&k, t.leases[key]) {
			changed = true
		}
	}
	if len(evs) > 0 {
		t.rev = evs[len(evs)-1].Kv.ModRevision
	}
	return changed
}

// putLocked records a PUT of a key that is not ours. A value that cannot be
// used is skipped, logged once per revision and counted; the last good value
// of the key, if any, stays, so a bad write never tears down a peer's routes.
// It reports whether the key's lease changed: a skipped value changes none.
func (m *Manager) putLocked(k *keyState, prev Lease) bool {
	t := &m.table
	key, l, err := k.key, k.lease, k.err
	if err == nil {
		err = m.validLease(l)
	}
	if err != nil {
		if t.bad[key] != k.modRev {
			t.bad[key] = k.modRev
			n := m.Stats.BadEntries.Add(1)
			kvs := []any{"key", clip.String(key), "revision", k.modRev, "count", n}
			// Acquire takes the subnet as held all the same, unless the
			// key names this host (eachHeld).
			if fe := (*FlanneldLeaseError)(nil); errors.As(err, &fe) {
				kvs = append(kvs, "flanneldReadsAsLeaseOf", fe.HeldSubnets())
				if fe.HostBits {
					kvs = append(kvs, "flanneldRouting", FlanneldHostBits)
				}
			}
			switch t.badLog.Next() {
			case lograte.Log:
				m.log.Error(err, "skipping key that is not a usable lease", kvs...)
			case lograte.Last:
				m.log.Error(err, "skipping key that is not a usable lease; more such keys are logged at -v=2 only until "+
					t.badLog.Until().Format(time.TimeOnly)+" (agentctl leases lists them all)", kvs...)
			default:
				// V(n).Error logs at any verbosity.
				m.log.V(2).Info("skipping key that is not a usable lease", append(kvs, "err", err)...)
			}
		}
		if prev.Subnet.IsValid() {
			t.leases[key] = prev
		}
		// In etcd now: its last good value stays, as for any other key.
		delete(t.carried, key)
		return false
	}
	delete(t.bad, key)
	if len(t.carried) > 0 {
		m.uncarryLocked(key, &l)
	}
	t.leases[key] = l
	// Even a write that changes only the revisions is recorded, so that a
	// snapshot always equals the table.
	t.touchLocked(key, idOf(&l))
	if prev.Subnet.IsValid() && prev.Attrs.Equal(l.Attrs) && prev.LeaseID == l.LeaseID {
		return true
	}
	if prev.Subnet.IsValid() {
		m.log.V(2).Info("peer lease changed", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP, "backend", clip.String(l.Attrs.BackendType))
	} else {
		m.log.V(2).Info("peer lease added", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP, "backend", clip.String(l.Attrs.BackendType))
	}
	return true
}

func (m *Manager) noteOwnLocked(k *keyState) {
	m.table.own = ownState{rev: k.modRev, present: true, lease: k.lease, err: k.err, createRev: k.createRev}
	signal(m.ownChanged)
}

func (m *Manager) ownKeyString() string {
	if p := m.ownKey.Load(); p != nil {
		return *p
	}
	return ""
}

// takeOwnState returns what the watch last saw of our key, and whether a
// list found etcd's history replaced since the last call.
func (m *Manager) takeOwnState() (st ownState, rewound bool) {
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	rewound, t.rewound = t.rewound, false
	return t.own, rewound
}
