package subnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/lograte"
	"github.com/go-logr/logr/funcr"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// peerKeys are the keys the random tests write: IPv4-only leases, and
// dual-stack ones, some sharing an IPv4 subnet so that the IPv6 subnet has to
// break the tie. Our own key is among them and must never show up in Peers.
func peerKeys() []string {
	var keys []string
	for i := 0; i < 40; i++ {
		keys = append(keys, fmt.Sprintf("/coreos.com/network/subnets/10.0.%d.0-24", i))
	}
	for i := 0; i < 10; i++ {
		keys = append(keys, fmt.Sprintf("/coreos.com/network/subnets/10.0.%d.0-24&fd00:%x::-64", i%4+1, i))
	}
	return keys
}

// randomEvent is a PUT of a good value (from a small set, so that some writes
// change nothing but the revision), a PUT of a bad value, or a DELETE.
func randomEvent(r *rand.Rand, keys []string, rev int64) *clientv3.Event {
	kv := &mvccpb.KeyValue{Key: []byte(keys[r.IntN(len(keys))]), ModRevision: rev, CreateRevision: rev, Lease: r.Int64N(3)}
	switch n := r.IntN(10); {
	case n < 6:
		kv.Value = fmt.Appendf(nil, `{"PublicIP":"198.18.0.%d","BackendType":"vxlan","BackendData":{"VNI":%d}}`, r.IntN(3), r.IntN(2))
		return &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
	case n < 7:
		kv.Value = []byte(`{"PublicIP":`)
		return &clientv3.Event{Type: mvccpb.PUT, Kv: kv}
	default:
		return &clientv3.Event{Type: mvccpb.DELETE, Kv: kv}
	}
}

// peerModel is what the table must hold, worked out from etcd's content
// (the model of the store) alone: every key but our own whose value is a
// usable lease, and for a key whose latest value is not, the last usable value
// written since the key was created, if any, so that a bad write does not tear
// down a peer's routes (see putLocked). A relist changes nothing: etcd holds
// what the events wrote.
type peerModel struct {
	own      string
	etcd     map[string]*mvccpb.KeyValue
	lastGood map[string]Lease
}

func (pm *peerModel) apply(m *Manager, ev *clientv3.Event) {
	key := string(ev.Kv.Key)
	if ev.Type == mvccpb.DELETE {
		delete(pm.etcd, key)
		delete(pm.lastGood, key)
		return
	}
	pm.etcd[key] = ev.Kv
	l, err := m.reg.decode(ev.Kv)
	if err == nil {
		err = m.validLease(l)
	}
	if err == nil {
		pm.lastGood[key] = l
	}
}

// peers is what Peers must return: the model's leases, sorted.
func (pm *peerModel) peers() []Lease {
	var ls []Lease
	for key := range pm.etcd {
		if l, ok := pm.lastGood[key]; ok && key != pm.own {
			ls = append(ls, l)
		}
	}
	sort.Slice(ls, func(i, j int) bool {
		a, b := ls[i], ls[j]
		if a.Subnet.Addr() != b.Subnet.Addr() {
			return a.Subnet.Addr().Less(b.Subnet.Addr())
		}
		return a.IPv6Subnet.Addr().Less(b.IPv6Subnet.Addr())
	})
	return ls
}

// TestPeersMatchesNaiveSnapshot drives the table with random events, relists
// and reads, and checks every snapshot against the leases worked out from a
// model of etcd (never against the table itself), that our own key is never
// among them, and that no snapshot handed out changes afterwards.
func TestPeersMatchesNaiveSnapshot(t *testing.T) {
	t.Parallel()
	keys := peerKeys()
	for seed := uint64(0); seed < 12; seed++ {
		r := rand.New(rand.NewPCG(seed, 1))
		// Readers that come often see few changes at a time and get merged
		// snapshots; rare ones see bursts that force a full rebuild.
		readEvery := []int{2, 40}[seed%2]
		m := benchManager(t)
		// With IPv6 on, the dual-stack keys are usable leases, and those
		// sharing an IPv4 subnet are ordered by their IPv6 one.
		m.net = &Config{Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24,
			EnableIPv6: true, IPv6Network: netip.MustParsePrefix("fd00::/16"), IPv6SubnetLen: 64}
		own := m.ownKeyString()
		if !slices.Contains(keys, own) {
			t.Fatalf("our own key %s is not among the keys written", own)
		}
		model := &peerModel{own: own, etcd: map[string]*mvccpb.KeyValue{}, lastGood: map[string]Lease{}}
		type handedOut struct{ got, want []Lease }
		var snaps []handedOut
		rev := int64(1)
		for step := 0; step < 2000; step++ {
			switch n := r.IntN(100 * readEvery); {
			case n < 2*readEvery:
				var kvs []*mvccpb.KeyValue
				for _, kv := range model.etcd {
					kvs = append(kvs, kv)
				}
				m.replaceTable(kvs, rev)
			case n < 100*readEvery-30:
				evs := make([]*clientv3.Event, 1+r.IntN(4))
				for i := range evs {
					rev++
					evs[i] = randomEvent(r, keys, rev)
					model.apply(m, evs[i])
				}
				m.applyEvents(evs)
			default:
				got, want := m.Peers(), model.peers()
				for _, l := range got {
					if m.reg.LeaseKey(l.Subnet, l.IPv6Subnet) == own {
						t.Fatalf("seed %d step %d: our own lease %s is among the peers", seed, step, own)
					}
				}
				if len(got) != len(want) || len(got) > 0 && !reflect.DeepEqual(got, want) {
					t.Fatalf("seed %d step %d: Peers differs from the model of etcd:\n got %v\nwant %v", seed, step, got, want)
				}
				if cap(got) != len(got) {
					t.Fatalf("seed %d step %d: snapshot has spare capacity %d: appends by two readers would race", seed, step, cap(got)-len(got))
				}
				snaps = append(snaps, handedOut{got, slices.Clone(got)})
			}
		}
		for i, s := range snaps {
			if len(s.got) > 0 && !reflect.DeepEqual(s.got, s.want) {
				t.Fatalf("seed %d: snapshot %d changed after it was handed out", seed, i)
			}
		}
	}
}

// TestPeersSnapshotIsNotWrittenWhileRead has two goroutines read snapshots
// while a third applies events. Snapshots are built inside Peers, so with two
// readers one builds while the other reads; under -race any write to a slice
// already handed out is reported.
func TestPeersSnapshotIsNotWrittenWhileRead(t *testing.T) {
	t.Parallel()
	keys := peerKeys()
	m := benchManager(t)
	m.replaceTable(nil, 1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				ps := m.Peers()
				for i := 1; i < len(ps); i++ {
					if peerOrder(idOf(&ps[i-1]), idOf(&ps[i])) >= 0 {
						t.Errorf("snapshot not sorted at %d: %s then %s", i, ps[i-1].Key(), ps[i].Key())
						return
					}
				}
			}
		}()
	}
	r := rand.New(rand.NewPCG(7, 7))
	for rev := int64(2); rev < 5000; rev++ {
		m.applyEvents([]*clientv3.Event{randomEvent(r, keys, rev)})
	}
	close(done)
	wg.Wait()
}

// TestBadKeysLogBounded: a thousand keys that are not usable leases (a tool
// writing junk, or a forced change of Network) are each skipped and counted,
// but only badKeyLines of them are logged a minute at the default
// verbosity, the last saying that the others go to -v=2; a minute later
// they are logged again.
func TestBadKeysLogBounded(t *testing.T) {
	m := benchManager(t)
	var lines []string
	m.log = funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	now := time.Unix(1000, 0)
	m.table.badLog = lograte.New(badKeyLines, time.Minute, func() time.Time { return now })
	junk := func(from, n int) []*mvccpb.KeyValue {
		var kvs []*mvccpb.KeyValue
		for i := from; i < from+n; i++ {
			kvs = append(kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "/coreos.com/network/subnets/junk-%d", i),
				Value: []byte("not a lease"), ModRevision: 2})
		}
		return kvs
	}
	m.replaceTable(junk(0, 1000), 2)
	if n := m.Stats.BadEntries.Load(); n != 1000 {
		t.Errorf("%d keys counted, want 1000", n)
	}
	got := lines
	if len(got) != badKeyLines {
		t.Fatalf("%d lines at -v=0 for 1000 unusable keys, want %d:\n%s", len(got), badKeyLines, strings.Join(got, "\n"))
	}
	if last := got[len(got)-1]; !strings.Contains(last, "-v=2") || !strings.Contains(last, "agentctl leases") {
		t.Errorf("the last line does not say where the others go: %s", last)
	}
	now = now.Add(time.Minute)
	evs := []*clientv3.Event{{Type: mvccpb.PUT, Kv: junk(1000, 1)[0]}}
	m.applyEvents(evs)
	if n := len(lines); n != badKeyLines+1 {
		t.Errorf("a minute later, %d lines, want %d", n, badKeyLines+1)
	}
}

// TestLeaseLogsBounded: what a write quotes of itself in the log (a key's
// name, a BackendType, an error quoting a value) is cut to clip.Len bytes,
// so that a key or value of a megabyte (etcd takes up to 1.5 MB) makes a
// line of bounded length at every verbosity, not one of its size on every
// write. The same holds for the error kept about our own key when it is
// overwritten with such a value, which the restore logs.
func TestLeaseLogsBounded(t *testing.T) {
	t.Parallel()
	m := benchManager(t)
	var lines []string
	m.log = funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 4})
	mb := strings.Repeat("x", 1<<20)
	put := func(key, value string) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte(value), ModRevision: 2, CreateRevision: 2}}
	}
	m.applyEvents([]*clientv3.Event{
		put("/coreos.com/network/subnets/"+mb, `{"PublicIP":"198.18.0.2","BackendType":"vxlan"}`),
		put("/coreos.com/network/subnets/10.0.2.0-24", `{"PublicIP":"`+mb+`","BackendType":"vxlan"}`),
		put("/coreos.com/network/subnets/10.0.3.0-24", `{"PublicIP":"198.18.0.3","BackendType":"`+mb+`"}`),
		put("/coreos.com/network/subnets/10.0.0.0-24", `{"PublicIP":"`+mb+`","BackendType":"vxlan"}`),
	})
	if n := m.Stats.BadEntries.Load(); n != 2 || len(m.Peers()) != 1 {
		t.Fatalf("%d bad keys, %d peers; want 2, 1", n, len(m.Peers()))
	}
	for _, want := range []string{`"msg"="skipping key that is not a usable lease"`, `"msg"="peer lease added"`} {
		if !slices.ContainsFunc(lines, func(l string) bool { return strings.Contains(l, want) }) {
			t.Errorf("no line with %s", want)
		}
	}
	for _, l := range lines {
		if len(l) > 1024 {
			t.Errorf("a line of %d bytes, want at most 1024: %.300s…", len(l), l)
		}
	}
	if st, _ := m.takeOwnState(); st.err == nil || len(st.err.Error()) > clip.Len {
		t.Errorf("our key overwritten with a PublicIP of 1 MB: error of %d bytes, want one of at most %d", len(fmt.Sprint(st.err)), clip.Len)
	}
}

// replaceTable makes the table the full list kvs read at revision rev, as a
// list the watch reads does, and returns the number of peers.
func (m *Manager) replaceTable(kvs []*mvccpb.KeyValue, rev int64) int {
	keys := make([]keyState, len(kvs))
	for i, kv := range kvs {
		keys[i] = m.reg.keyState(kv)
	}
	n, _ := m.listed(keys, rev, false, false)
	return n
}
