package subnet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/etcdhistory"
	"github.com/agentd/agentd/tests/etcdtest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// junkKV is an etcd in memory, at the level of its gRPC client, whose keys
// under the subnets prefix are leases and junk values of junkSize bytes. It
// makes every value of an answer afresh, as the client decodes a real
// answer afresh, so that what stays on the heap after an answer is what the
// reader kept. Each Range measures the live heap, after a collection, with
// its answer in hand: peak is the largest figure above base.
type junkKV struct {
	etcdserverpb.KVClient // nil: only Range is served
	keys                  []string
	leases                map[string][]byte
	junkSize              int
	base, peak            uint64
	ranges                int
}

func newJunkKV(leases, junk, junkSize int) *junkKV {
	f := &junkKV{leases: map[string][]byte{}, junkSize: junkSize}
	for i := range leases {
		kv := leaseKV(i, 1)
		f.keys = append(f.keys, string(kv.Key))
		f.leases[string(kv.Key)] = kv.Value
	}
	for i := range junk {
		f.keys = append(f.keys, fmt.Sprintf("%s/subnets/junk-%04d", DefaultPrefix, i))
	}
	slices.Sort(f.keys)
	return f
}

func (f *junkKV) Range(_ context.Context, r *etcdserverpb.RangeRequest, _ ...grpc.CallOption) (*etcdserverpb.RangeResponse, error) {
	resp := &etcdserverpb.RangeResponse{Header: &etcdserverpb.ResponseHeader{Revision: 100, ClusterId: 1}}
	for _, k := range f.keys {
		if k < string(r.Key) || len(r.RangeEnd) > 0 && k >= string(r.RangeEnd) || len(r.RangeEnd) == 0 && k != string(r.Key) {
			continue
		}
		resp.Count++
		if r.Limit > 0 && int64(len(resp.Kvs)) == r.Limit {
			resp.More = true
			continue
		}
		kv := &mvccpb.KeyValue{Key: []byte(k), ModRevision: 1, CreateRevision: 1, Version: 1}
		switch v, ok := f.leases[k]; {
		case r.KeysOnly:
		case ok:
			kv.Value = slices.Clone(v)
		default:
			kv.Value = []byte(`{"PublicIP":"` + strings.Repeat("x", f.junkSize-15) + `"}`)
		}
		resp.Kvs = append(resp.Kvs, kv)
	}
	f.ranges++
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if ms.HeapAlloc > f.base {
		f.peak = max(f.peak, ms.HeapAlloc-f.base)
	}
	return resp, nil
}

// TestFullReadsHoldOnePage: every read of all the leases (List, as
// agentctl and Release use it; the watch's list; Acquire's view) holds the
// values of one page at most, not all of them: 400 junk values of 256 KiB
// under the subnets prefix (100 MiB) beside 50 leases raise the live heap
// during the read by about one page of them (100 keys: 25 MiB), and
// nothing of them is left after it. Each junk key is counted as not a lease.
// One request of the whole prefix held all 100 MiB.
func TestFullReadsHoldOnePage(t *testing.T) {
	const leases, junk, size = 50, 400, 256 << 10
	// One page of junk, the leases that come first, and slack for the
	// collector's own figures.
	const bound = defaultPageSize*size + 4<<20
	net := &Config{Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24}
	reads := []struct {
		name string
		read func(ctx context.Context, reg *Registry) (nLeases, nBad int, err error)
	}{
		{"List", func(ctx context.Context, reg *Registry) (int, int, error) {
			l, bad, _, err := reg.List(ctx)
			return len(l), len(bad), err
		}},
		{"watch list", func(ctx context.Context, reg *Registry) (int, int, error) {
			m := NewManager(reg, net, ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1")})
			err := m.relist(ctx, &etcdhistory.History{}, nil, false)
			return len(m.Peers()), m.UnusableKeys(), err
		}},
		{"Acquire's view", func(ctx context.Context, reg *Registry) (int, int, error) {
			v := &leaseView{reg: reg}
			err := v.read(ctx)
			return len(v.leases), len(v.bad), err
		}},
	}
	for _, r := range reads {
		t.Run(r.name, func(t *testing.T) {
			f := newJunkKV(leases, junk, size)
			cli := clientv3.NewCtxClient(context.Background())
			cli.KV = clientv3.NewKVFromKVClient(f, cli)
			reg := NewRegistry(cli, "")
			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			f.base = ms.HeapAlloc
			n, bad, err := r.read(context.Background(), reg)
			if err != nil {
				t.Fatal(err)
			}
			if n != leases || bad != junk {
				t.Errorf("%d leases and %d keys not leases, want %d and %d", n, bad, leases, junk)
			}
			t.Logf("live heap up to %.1f MiB above the start, %d requests", float64(f.peak)/(1<<20), f.ranges)
			if f.peak > bound {
				t.Errorf("live heap rose by %.1f MiB during the read (%d requests), want at most %.1f MiB (one page); all the junk is %.1f MiB",
					float64(f.peak)/(1<<20), f.ranges, float64(bound)/(1<<20), float64(junk*size)/(1<<20))
			}
			runtime.GC()
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > f.base && ms.HeapAlloc-f.base > 4<<20 {
				t.Errorf("live heap %.1f MiB above the start after the read", float64(ms.HeapAlloc-f.base)/(1<<20))
			}
			runtime.KeepAlive(reg)
		})
	}
}

// hookKV calls after once each Get has returned, with how many have.
type hookKV struct {
	clientv3.KV
	gets  int
	after func(n int, resp *clientv3.GetResponse)
}

func (h *hookKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := h.KV.Get(ctx, key, opts...)
	h.gets++
	if err == nil && h.after != nil {
		h.after(h.gets, resp)
	}
	return resp, err
}

// readAt is the reference: the leases and other keys under the subnets
// prefix in one request at revision rev.
func readAt(t *testing.T, cli *clientv3.Client, reg *Registry, rev int64) ([]Lease, []BadEntry) {
	t.Helper()
	resp, err := cli.Get(context.Background(), reg.SubnetsPrefix(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatal(err)
	}
	var (
		leases []Lease
		bad    []BadEntry
	)
	for _, kv := range resp.Kvs {
		if k := reg.keyState(kv); k.err != nil {
			bad = append(bad, k.badEntry())
		} else {
			leases = append(leases, k.lease)
		}
	}
	sortLeases(leases)
	return leases, bad
}

func sameList(t *testing.T, what string, leases []Lease, bad []BadEntry, wantLeases []Lease, wantBad []BadEntry) {
	t.Helper()
	str := func(ls []Lease, bs []BadEntry) string {
		var b strings.Builder
		for _, l := range ls {
			fmt.Fprintf(&b, "%s %s %s lease=%d mod=%d create=%d\n", l.Key(), l.Attrs.PublicIP, l.Attrs.BackendData, l.LeaseID, l.ModRevision, l.CreateRevision)
		}
		for _, e := range bs {
			fmt.Fprintf(&b, "bad %s mod=%d: %v\n", e.Key, e.ModRevision, e.Err)
		}
		return b.String()
	}
	if got, want := str(leases, bad), str(wantLeases, wantBad); got != want {
		t.Errorf("%s:\n%s\nwant (one request at the same revision):\n%s", what, got, want)
	}
}

// pagedRegistry starts etcd and returns a client to write with, a registry
// that reads through hook in pages of pageSize keys, and put, which writes
// with that client and fails the test on an error.
func pagedRegistry(t *testing.T, pageSize int64) (writer *clientv3.Client, reg *Registry, hook *hookKV, put func(key, value string)) {
	srv := etcdtest.Start(t)
	writer = srv.Client(t)
	reader := srv.Client(t)
	hook = &hookKV{KV: reader.KV}
	reader.KV = hook
	reg = NewRegistry(reader, "")
	reg.pageSize = pageSize
	put = func(key, value string) {
		t.Helper()
		if _, err := writer.Put(context.Background(), key, value); err != nil {
			t.Fatal(err)
		}
	}
	return writer, reg, hook, put
}

// TestPagedListIsOneSnapshot: a list read in pages returns what one request
// at the revision of its first page returns, and that revision, whatever is
// written between its pages: keys added, deleted and rewritten in the part
// not yet read are seen as they were. If that revision is compacted before
// the last page, the list starts again at a newer one (and gives up, with
// etcd's error, if that happens on every try). The watch's list and
// Acquire's reads of the keys written since (WithMinModRev) read pages
// alike.
func TestPagedListIsOneSnapshot(t *testing.T) {
	t.Parallel()
	writer, reg, hook, put := pagedRegistry(t, 3)
	ctx := context.Background()
	for i := range 20 {
		kv := leaseKV(i, 0)
		put(string(kv.Key), string(kv.Value))
	}
	sub := reg.SubnetsPrefix()
	put(sub+"10.0.5.0-24junk", "not a lease")
	put(sub+"10.0.109.0-24", `{"PublicIP":`)
	put(sub+"10.0.112.0-24", `{"PublicIP":"`+strings.Repeat("x", 64<<10)+`"}`)

	t.Run("quiet", func(t *testing.T) {
		hook.gets, hook.after = 0, nil
		leases, bad, rev, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// 8 pages, and one request for each empty range beside
		// <prefix>/subnets/ where flanneld reads leases (flanneldSiblings).
		if hook.gets != 8+2 {
			t.Errorf("%d requests for 23 keys in pages of 3, want 8+2", hook.gets)
		}
		if len(leases) != 20 || len(bad) != 3 {
			t.Errorf("%d leases and %d other keys, want 20 and 3", len(leases), len(bad))
		}
		cur, err := writer.Get(ctx, "anything")
		if err != nil {
			t.Fatal(err)
		}
		if rev != cur.Header.Revision {
			t.Errorf("listed at revision %d, etcd is at %d", rev, cur.Header.Revision)
		}
		wl, wb := readAt(t, writer, reg, rev)
		sameList(t, "paged list", leases, bad, wl, wb)
	})

	t.Run("writes between pages", func(t *testing.T) {
		var first int64
		hook.gets, hook.after = 0, func(n int, resp *clientv3.GetResponse) {
			if n != 1 {
				return
			}
			first = resp.Header.Revision
			// The first page is 10.0.1.0-24, 10.0.10.0-24 and
			// 10.0.109.0-24: keys sort as strings.
			put(sub+"10.0.30.0-24", string(leaseKV(40, 0).Value))
			put(sub+"10.0.15.0-24", string(leaseKV(41, 0).Value))
			put(sub+"zz-junk", "not a lease")
			if _, err := writer.Delete(ctx, sub+"10.0.18.0-24"); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"10.0.109.0-24", "10.0.5.0-24junk"} {
				if _, err := writer.Delete(ctx, sub+k); err != nil {
					t.Fatal(err)
				}
			}
		}
		leases, bad, rev, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev != first {
			t.Errorf("listed at revision %d, its first page was read at %d", rev, first)
		}
		wl, wb := readAt(t, writer, reg, first)
		sameList(t, "paged list with writes between pages", leases, bad, wl, wb)
		if len(leases) != 20 || len(bad) != 3 {
			t.Errorf("%d leases and %d other keys, want the 20 and 3 of the first page's revision", len(leases), len(bad))
		}
	})

	t.Run("compacted between pages", func(t *testing.T) {
		var revs []int64
		hook.gets, hook.after = 0, func(n int, resp *clientv3.GetResponse) {
			if len(revs) == 0 || n == 2 {
				revs = append(revs, resp.Header.Revision)
			}
			if n != 2 {
				return
			}
			put(sub+"10.0.31.0-24", string(leaseKV(42, 0).Value))
			cur, err := writer.Get(ctx, "anything")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := writer.Compact(ctx, cur.Header.Revision); err != nil {
				t.Fatal(err)
			}
		}
		leases, bad, rev, err := reg.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if rev <= revs[0] {
			t.Errorf("listed at revision %d, not after the one compacted (%d)", rev, revs[0])
		}
		wl, wb := readAt(t, writer, reg, rev)
		sameList(t, "paged list started again after a compaction", leases, bad, wl, wb)
	})

	t.Run("compacted on every try", func(t *testing.T) {
		hook.gets, hook.after = 0, func(n int, resp *clientv3.GetResponse) {
			put(sub+"zz-junk", "not a lease")
			if _, err := writer.Compact(ctx, resp.Header.Revision+1); err != nil {
				t.Fatal(err)
			}
		}
		_, _, _, err := reg.List(ctx)
		if !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("List: %v, want etcd's compacted error", err)
		}
		if want := 2 * (maxScanRestarts + 1); hook.gets != want {
			t.Errorf("%d requests, want %d: two per try", hook.gets, want)
		}
	})

	t.Run("watch list", func(t *testing.T) {
		hook.gets, hook.after = 0, nil
		net := &Config{Network: netip.MustParsePrefix("10.0.0.0/8"), SubnetLen: 24}
		m := NewManager(reg, net, ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1")})
		h := etcdhistory.History{}
		if err := m.relist(ctx, &h, nil, false); err != nil {
			t.Fatal(err)
		}
		wl, wb := readAt(t, writer, reg, h.Rev)
		if got, want := fmt.Sprint(m.Peers()), fmt.Sprint(wl); got != want {
			t.Errorf("peers %s, want %s", got, want)
		}
		if got, want := m.UnusableKeys(), len(wb); got != want {
			t.Errorf("%d unusable keys, want %d", got, want)
		}
		if hook.gets < 2 {
			t.Errorf("%d requests: not read in pages", hook.gets)
		}
	})

	t.Run("keys written since", func(t *testing.T) {
		hook.gets, hook.after = 0, nil
		v := &leaseView{reg: reg}
		if err := v.read(ctx); err != nil {
			t.Fatal(err)
		}
		for i := 50; i < 57; i++ {
			kv := leaseKV(i, 0)
			put(string(kv.Key), string(kv.Value))
		}
		put(sub+"10.0.2.0-24", `{"PublicIP":`)
		hook.gets = 0
		if err := v.read(ctx); err != nil {
			t.Fatal(err)
		}
		if !v.partial() {
			t.Fatal("the second read was a full list")
		}
		if hook.gets != 3+2 {
			t.Errorf("%d requests for 8 keys written since, in pages of 3, want 3+2 (flanneldSiblings)", hook.gets)
		}
		wl, wb := readAt(t, writer, reg, v.rev)
		sameList(t, "view after a read of the keys written since", v.leases, v.bad, wl, wb)
	})
}
