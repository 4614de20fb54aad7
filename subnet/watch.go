package subnet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerTable is the lease set as the watch last saw it. The watch goroutine
// writes it; readers take a snapshot, built lazily so that a burst of events
// costs one rebuild per reader wake-up rather than one per event.
type peerTable struct {
	mu     sync.Mutex
	leases map[string]Lease // by full key, our own excluded
	// bad maps keys that are not usable leases to the revision logged.
	bad   map[string]int64
	own   ownState
	dirty bool
	snap  []Lease
}

// ownState is what the watch last saw of our own key.
type ownState struct {
	// rev is the revision the state was observed at; states no newer than
	// our own last write are stale.
	rev       int64
	present   bool
	lease     Lease // valid when present and err is nil
	err       error // the value could not be used
	createRev int64
}

// Peers returns every lease but our own, sorted by subnet. The slice is shared
// and must not be modified.
func (m *Manager) Peers() []Lease {
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dirty || t.snap == nil {
		t.snap = make([]Lease, 0, len(t.leases))
		for _, l := range t.leases {
			t.snap = append(t.snap, l)
		}
		sortLeases(t.snap)
		t.dirty = false
	}
	return t.snap
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
// stream) it lists again and diffs. It returns when ctx is done.
func (m *Manager) watchLoop(ctx context.Context) {
	b := backoff{min: 200 * time.Millisecond, max: 10 * time.Second}
	var failing error
	for ctx.Err() == nil {
		rev, err := m.relist(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if failing == nil {
				m.log.Error(err, "cannot list leases; retrying until etcd answers")
			}
			failing = err
			_ = sleepCtx(ctx, b.next())
			continue
		}
		if failing != nil {
			m.log.Info("listing leases works again")
			failing = nil
		}
		b.reset()
		err = m.watchFrom(ctx, rev+1)
		if ctx.Err() != nil {
			return
		}
		m.Stats.Relists.Add(1)
		m.log.Info("lease watch ended; listing all leases again", "reason", err)
		_ = sleepCtx(ctx, b.next())
	}
}

// relist replaces the table with a fresh list and returns its revision.
func (m *Manager) relist(ctx context.Context) (int64, error) {
	resp, err := m.reg.cli.Get(ctx, m.reg.SubnetsPrefix(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list leases under %s: %w", m.reg.SubnetsPrefix(), err)
	}
	rev := resp.Header.Revision
	ownKey := m.ownKeyString()
	t := &m.table
	t.mu.Lock()
	old := t.leases
	t.leases = make(map[string]Lease, len(resp.Kvs))
	sawOwn := false
	for _, kv := range resp.Kvs {
		if string(kv.Key) == ownKey {
			sawOwn = true
			m.noteOwnLocked(kv, rev)
			continue
		}
		m.putLocked(kv, old[string(kv.Key)])
	}
	if !sawOwn && ownKey != "" {
		t.own = ownState{rev: rev}
		signal(m.ownChanged)
	}
	for k := range t.bad {
		if _, ok := t.leases[k]; !ok && !present(resp.Kvs, k) {
			delete(t.bad, k)
		}
	}
	t.dirty = true
	n := len(t.leases)
	t.mu.Unlock()
	m.log.V(2).Info("listed leases", "peers", n, "revision", rev)
	m.syncedOnce.Do(func() { close(m.synced) })
	signal(m.changed)
	return rev, nil
}

func present(kvs []*mvccpb.KeyValue, key string) bool {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return true
		}
	}
	return false
}

// watchFrom applies events from revision rev on until the watch breaks.
func (m *Manager) watchFrom(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := m.reg.cli.Watch(wctx, m.reg.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	for resp := range wch {
		if resp.CompactRevision != 0 {
			return fmt.Errorf("revision %d was compacted (oldest kept: %d)", rev, resp.CompactRevision)
		}
		if err := resp.Err(); err != nil {
			return err
		}
		if len(resp.Events) == 0 {
			continue
		}
		m.applyEvents(resp.Events)
		rev = resp.Header.Revision + 1
		signal(m.changed)
	}
	return errors.New("watch stream closed")
}

func (m *Manager) applyEvents(evs []*clientv3.Event) {
	ownKey := m.ownKeyString()
	t := &m.table
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ev := range evs {
		m.Stats.WatchEvents.Add(1)
		key := string(ev.Kv.Key)
		m.log.V(4).Info("lease event", "type", ev.Type.String(), "key", key, "revision", ev.Kv.ModRevision)
		if key == ownKey {
			if ev.Type == mvccpb.DELETE {
				t.own = ownState{rev: ev.Kv.ModRevision}
				signal(m.ownChanged)
			} else {
				m.noteOwnLocked(ev.Kv, ev.Kv.ModRevision)
			}
			continue
		}
		if ev.Type == mvccpb.DELETE {
			if l, ok := t.leases[key]; ok {
				m.log.V(2).Info("peer lease removed", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP)
			}
			delete(t.leases, key)
			delete(t.bad, key)
			t.dirty = true
			continue
		}
		m.putLocked(ev.Kv, t.leases[key])
	}
}

// putLocked records a PUT of a key that is not ours. A value that cannot be
// used is skipped, logged once per revision and counted; the last good value
// of the key, if any, stays, so a bad write never tears down a peer's routes.
func (m *Manager) putLocked(kv *mvccpb.KeyValue, prev Lease) {
	t := &m.table
	key := string(kv.Key)
	l, err := m.reg.decode(kv)
	if err == nil {
		err = m.validLease(l)
	}
	if err != nil {
		if t.bad[key] != kv.ModRevision {
			t.bad[key] = kv.ModRevision
			m.Stats.BadEntries.Add(1)
			m.log.Error(err, "skipping key that is not a usable lease", "key", key, "revision", kv.ModRevision)
		}
		if prev.Subnet.IsValid() {
			t.leases[key] = prev
		}
		return
	}
	delete(t.bad, key)
	if prev.Subnet.IsValid() && prev.Attrs.Equal(l.Attrs) && prev.LeaseID == l.LeaseID {
		t.leases[key] = l
		return
	}
	if prev.Subnet.IsValid() {
		m.log.V(2).Info("peer lease changed", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP, "backend", l.Attrs.BackendType)
	} else {
		m.log.V(2).Info("peer lease added", "subnet", l.Subnet, "publicIP", l.Attrs.PublicIP, "backend", l.Attrs.BackendType)
	}
	t.leases[key] = l
	t.dirty = true
}

func (m *Manager) noteOwnLocked(kv *mvccpb.KeyValue, rev int64) {
	l, err := m.reg.decode(kv)
	m.table.own = ownState{rev: rev, present: true, lease: l, err: err, createRev: kv.CreateRevision}
	signal(m.ownChanged)
}

func (m *Manager) ownKeyString() string {
	if p := m.ownKey.Load(); p != nil {
		return *p
	}
	return ""
}

func (m *Manager) ownState() ownState {
	m.table.mu.Lock()
	defer m.table.mu.Unlock()
	return m.table.own
}
