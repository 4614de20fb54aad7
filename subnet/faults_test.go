package subnet_test

// Faults of etcd itself, and of what is written into it, that the lease
// holder must ride out.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
)

// restartable is an etcd that a test stops and starts again on the same
// endpoint, in a namespace of its own, keeping its data or with an empty data
// directory (as after a disk loss). Its member and cluster IDs follow from
// its name and peer URL, so an empty restart keeps them: only the revision
// shows that the history is new.
type restartable struct {
	t        *testing.T
	srv      etcdtest.Server // NS and Endpoint only: for ClientConfig
	progress time.Duration   // progress notification interval; 0: etcd's default (10 min)
	// bcryptCost is the cost of etcd's password hashes; 0: etcd's
	// default (bcrypt's, 10).
	bcryptCost uint
	base       string
	runs       int
	e          *embed.Etcd
}

func startRestartable(t *testing.T, progress time.Duration) *restartable {
	t.Helper()
	return startTuned(t, &restartable{progress: progress})
}

// startTuned starts r, whose tuning fields (progress, bcryptCost) are set,
// as startRestartable does.
func startTuned(t *testing.T, r *restartable) *restartable {
	t.Helper()
	r.t, r.srv, r.base = t, etcdtest.Server{NS: etcdtest.NewNetns(t), Endpoint: "http://127.0.0.1:2379"}, t.TempDir()
	r.start(false)
	t.Cleanup(r.stop)
	return r
}

// start starts etcd in its last data directory when keep is set, else in a
// new, empty one.
func (r *restartable) start(keep bool) {
	r.t.Helper()
	if !keep || r.runs == 0 {
		r.runs++
	}
	r.startIn(filepath.Join(r.base, fmt.Sprint(r.runs)))
}

// config is the server's config with data directory dir: the same name,
// URLs and cluster token each time, so the same member and cluster IDs.
func (r *restartable) config(dir string) *embed.Config {
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	if r.progress != 0 {
		cfg.WatchProgressNotifyInterval = r.progress
	}
	if r.bcryptCost != 0 {
		cfg.BcryptCost = r.bcryptCost
	}
	cu, _ := url.Parse(r.srv.Endpoint)
	pu, _ := url.Parse("http://127.0.0.1:2380")
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	return cfg
}

func (r *restartable) startIn(dir string) {
	r.t.Helper()
	e, err := etcdtest.InNetns(r.srv.NS, func() (*embed.Etcd, error) {
		return embed.StartEtcd(r.config(dir))
	})
	if err != nil {
		r.t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		r.t.Fatal("etcd not ready after 30s")
	}
	r.e = e
}

// snapshot saves a snapshot of the running etcd (the Maintenance API's, as
// etcdctl snapshot save takes it) to a file and returns its path.
func (r *restartable) snapshot(cli *clientv3.Client) string {
	r.t.Helper()
	rc, err := cli.Snapshot(context.Background())
	if err != nil {
		r.t.Fatalf("snapshot: %v", err)
	}
	defer rc.Close()
	path := filepath.Join(r.base, fmt.Sprintf("snapshot-%d.db", r.runs))
	f, err := os.Create(path)
	if err != nil {
		r.t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		r.t.Fatalf("snapshot: %v", err)
	}
	if err := f.Close(); err != nil {
		r.t.Fatal(err)
	}
	return path
}

// restore stops etcd and starts it again from the snapshot file snap,
// restored into a new data directory as etcdutl snapshot restore does it,
// for the same member name, URLs and cluster token, so the member and cluster
// IDs stay. bump, when not 0, is etcdutl's --bump-revision with
// --mark-compacted: the revision goes up by bump rather than back to the
// snapshot's, and every older one counts as compacted.
func (r *restartable) restore(snap string, bump uint64) {
	r.t.Helper()
	r.stop()
	r.runs++
	dir := filepath.Join(r.base, fmt.Sprint(r.runs))
	cfg := r.config(dir)
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snap,
		Name:                cfg.Name,
		OutputDataDir:       dir,
		PeerURLs:            []string{cfg.AdvertisePeerUrls[0].String()},
		InitialCluster:      cfg.InitialCluster,
		InitialClusterToken: cfg.InitialClusterToken,
		RevisionBump:        bump,
		MarkCompacted:       bump != 0,
	})
	if err != nil {
		r.t.Fatalf("restore snapshot %s: %v", snap, err)
	}
	r.startIn(dir)
}

func (r *restartable) stop() {
	if r.e != nil {
		r.e.Close()
		r.e = nil
	}
}

// client returns a client of the server, closed when the test ends. It
// reconnects by itself across restarts.
func (r *restartable) client() *clientv3.Client {
	r.t.Helper()
	c, err := clientv3.New(r.srv.ClientConfig())
	if err != nil {
		r.t.Fatalf("etcd client: %v", err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// env returns an env (see manager_test.go) on r, with the network config
// written; srv is nil.
func (r *restartable) env(config string) *env {
	r.t.Helper()
	cli := r.client()
	if _, err := cli.Put(context.Background(), prefix+"/config", config); err != nil {
		r.t.Fatal(err)
	}
	reg := subnet.NewRegistry(cli, prefix)
	cfg, err := reg.GetConfig(context.Background())
	if err != nil {
		r.t.Fatal(err)
	}
	return &env{cli: cli, reg: reg, net: cfg}
}

func hasPeer(m *subnet.Manager, sn string) bool {
	return strings.Contains(" "+peerSubnets(m)+" ", " "+sn+"@")
}

// waitPeer waits until m has a peer of subnet sn (what names the wait).
func waitPeer(t *testing.T, m *subnet.Manager, sn, what string) {
	t.Helper()
	eventually(t, what, func() error {
		if !hasPeer(m, sn) {
			return errors.New("not yet")
		}
		return nil
	})
}

// TestEtcdRestartedEmptyRelistsAndRecreatesOwnKey: etcd loses its data and
// comes back on the same endpoint with the same IDs, its revision far below
// the one the watch had reached. The clientv3 watch resumes at the old
// revision without a word, so without a check every lease written since
// would be missed until the new revision passed the old one; and our key
// is gone while its old revision makes any state of it look stale.
func TestEtcdRestartedEmptyRelistsAndRecreatesOwnKey(t *testing.T) {
	t.Parallel()
	r := startRestartable(t, 0) // etcd's default: no progress notification within the test
	e := r.env(net16)
	ctx := context.Background()
	for i := 0; i < 300; i++ {
		if _, err := e.cli.Put(ctx, fmt.Sprintf("/unrelated/%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	own := acquire(t, a)
	stop := run(t, a)
	<-a.PeersSynced()

	r.stop()
	r.start(false)
	if _, err := e.cli.Put(ctx, prefix+"/config", net16); err != nil {
		t.Fatal(err)
	}
	b := e.manager("198.18.0.2", hostID(2), pinned("10.244.2.0/24"))
	acquire(t, b)

	eventually(t, "new peer seen and own key recreated", func() error {
		if !hasPeer(a, "10.244.2.0/24") {
			return fmt.Errorf("peers %q, relists %d", peerSubnets(a), a.Stats.Relists.Load())
		}
		val, id, ok := e.raw(t, own)
		if !ok || !strings.Contains(val, `"198.18.0.1"`) {
			return fmt.Errorf("own key absent (Own says %v)", func() bool { _, ok := a.Own(); return ok }())
		}
		if l, _ := a.Own(); l.LeaseID != id || id == 0 {
			return fmt.Errorf("own key on etcd lease %x, Own says %x", id, l.LeaseID)
		}
		return nil
	})
	if n := a.Stats.Relists.Load(); n < 1 {
		t.Errorf("Relists = %d", n)
	}
	// The recreated key stays: its etcd lease exists in the new etcd.
	l, _ := a.Own()
	ttl, err := e.cli.TimeToLive(ctx, clientv3.LeaseID(l.LeaseID))
	if err != nil || ttl.TTL <= 0 {
		t.Fatalf("own etcd lease %x: ttl %v, %v", l.LeaseID, ttl, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestEtcdRestoredFromSnapshotKeepsOwnKey: an operator restores etcd from a
// snapshot (etcdutl snapshot restore into a new data directory) on the same
// endpoint, with the same member and cluster IDs. The snapshot was taken
// after our key was written, so it holds our key as we wrote it, on our etcd
// lease: the lease is still ours, and nothing of it is lost (same subnet,
// same etcd lease, kept alive, no reacquire). The peer set becomes the
// restored etcd's: a peer key put after the snapshot is gone, one in the
// snapshot stays, and a host that leased its subnet after the snapshot finds
// its key gone, recreates it and is seen again. Both ways of restoring are
// covered: the revision going back to the snapshot's (found by the history
// check after the reconnect), and etcdutl's --bump-revision with
// --mark-compacted (found as a compaction).
func TestEtcdRestoredFromSnapshotKeepsOwnKey(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		bump uint64
	}{
		{"revision rewound", 0},
		{"revision bumped and compacted", 1_000_000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := startRestartable(t, 0) // etcd's default: no progress notification within the test
			e := r.env(net16)
			ctx := context.Background()
			var lost lostReasons
			a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
				// Kept alive every 5 s, so that the test sees a renewal.
				c.TTL = 15 * time.Second
				c.OnLeaseState = lost.record
			})
			own := acquire(t, a)
			returned := runWatched(t, a)
			<-a.PeersSynced()
			put := func(n int) {
				t.Helper()
				if _, err := e.cli.Put(ctx, fmt.Sprintf("%s/subnets/10.244.%d.0-24", prefix, n),
					fmt.Sprintf(`{"PublicIP":"198.18.0.%d"}`, n)); err != nil {
					t.Fatal(err)
				}
			}
			put(100)
			waitPeer(t, a, "10.244.100.0/24", "peer of the snapshot seen")
			snap := r.snapshot(e.cli)

			put(101)
			b := e.manager("198.18.0.2", hostID(2), pinned("10.244.2.0/24"))
			acquire(t, b)
			runWatched(t, b)
			waitPeer(t, a, "10.244.101.0/24", "peer put after the snapshot seen")
			waitPeer(t, a, "10.244.2.0/24", "host leased after the snapshot seen")
			relists := a.Stats.Relists.Load()

			r.restore(snap, tc.bump)
			const want = "10.244.2.0/24@198.18.0.2 10.244.100.0/24@198.18.0.100"
			eventuallyWithin(t, 40*time.Second, "the restored etcd's peers, and the host leased after the snapshot back", func() error {
				if ok, err := returned(); ok {
					t.Fatalf("Run returned: %v", err)
				}
				if got, n := peerSubnets(a), a.Stats.Relists.Load(); got != want || n == relists {
					return fmt.Errorf("peers %q, want %q; relists %d, %d before the restore", got, want, n, relists)
				}
				return nil
			})
			if r := lost.get(); len(r) > 0 {
				t.Errorf("lease reported lost: %q", r)
			}
			if l, _ := a.Own(); l.Subnet != own.Subnet || l.LeaseID != own.LeaseID || a.Stats.Reacquired.Load() != 0 {
				t.Errorf("Own = %s on etcd lease %x, Reacquired %d; want %s on %x, none",
					l.Subnet, l.LeaseID, a.Stats.Reacquired.Load(), own.Subnet, own.LeaseID)
			}
			if val, id, ok := e.raw(t, own); !ok || id != own.LeaseID || !strings.Contains(val, hostID(1)) {
				t.Errorf("own key: %s on etcd lease %x (present %v), want ours on %x", val, id, ok, own.LeaseID)
			}
			// Alive: the etcd lease exists and its TTL goes up again, as
			// only a keepalive makes it.
			low := int64(-1)
			eventuallyWithin(t, 20*time.Second, "own etcd lease renewed", func() error {
				resp, err := e.cli.TimeToLive(ctx, clientv3.LeaseID(own.LeaseID))
				switch {
				case err != nil:
					return err
				case resp.TTL <= 0:
					t.Fatalf("own etcd lease %x gone: TTL %d", own.LeaseID, resp.TTL)
				case low >= 0 && resp.TTL > low:
					return nil
				case low < 0 || resp.TTL < low:
					low = resp.TTL
				}
				return fmt.Errorf("TTL %d, lowest %d", resp.TTL, low)
			})
			if _, id, ok := e.raw(t, own); !ok || id != own.LeaseID {
				t.Errorf("own key on etcd lease %x (present %v) after the renewal, want %x", id, ok, own.LeaseID)
			}
		})
	}
}

// TestQuietWatchDoesNotRelist: progress notifications through a long quiet
// period, and a restart of etcd that keeps its data, bring no re-list: the
// revisions they carry are not below the ones seen.
func TestQuietWatchDoesNotRelist(t *testing.T) {
	t.Parallel()
	r := startRestartable(t, 50*time.Millisecond)
	e := r.env(net16)
	ctx := context.Background()
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	acquire(t, a)
	run(t, a)
	<-a.PeersSynced()
	put := func(n int) {
		t.Helper()
		if _, err := e.cli.Put(ctx, fmt.Sprintf("%s/subnets/10.244.%d.0-24", prefix, n), fmt.Sprintf(`{"PublicIP":"198.18.0.%d"}`, n)); err != nil {
			t.Fatal(err)
		}
	}
	put(100)
	waitPeer(t, a, "10.244.100.0/24", "peer seen")
	// A watch of the test's own counts the notifications that etcd sends
	// every watch asking for them, the manager's included.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := e.cli.Watch(wctx, "/nothing", clientv3.WithProgressNotify())
	for n := 0; n < 40; {
		select {
		case resp := <-wch:
			if resp.IsProgressNotify() {
				n++
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%d progress notifications in 20 s", n)
		}
	}
	cancel()

	r.stop()
	r.start(true)
	put(101)
	waitPeer(t, a, "10.244.101.0/24", "peer seen after the restart")
	if n := a.Stats.Relists.Load(); n != 0 {
		t.Fatalf("Relists = %d, want 0", n)
	}
	if n := a.Stats.Reacquired.Load(); n != 0 {
		t.Fatalf("Reacquired = %d, want 0", n)
	}
}

// runWatched starts m.Run and returns a function that reports whether Run
// has returned, and its error, while the test runs.
// TestEtcdRestoredBetweenAcquireAndRun: etcd is restored from a snapshot
// older than our last write after Acquire made it and before Run's first
// list. That list has no earlier one to compare with, but it is below our
// own write's revision: a new history, in which our key is not as we wrote
// it, so Run writes it again. Our key is a reservation (no etcd lease, so
// no keepalive can notice instead): the snapshot holds it as the operator
// wrote it, without our backend data, which peers need. Before, the first
// list's history started empty, the older value counted as no newer than
// our write, and the key kept it (found by
// TestEtcdRestoredFromSnapshotKeepsOwnKey, when the second host's first list
// came after the restore).
func TestEtcdRestoredBetweenAcquireAndRun(t *testing.T) {
	t.Parallel()
	r := startRestartable(t, 0)
	e := r.env(net16)
	key := prefix + "/subnets/10.244.42.0-24"
	if _, err := e.cli.Put(context.Background(), key, `{"PublicIP":"198.18.0.7"}`); err != nil {
		t.Fatal(err)
	}
	snap := r.snapshot(e.cli)
	m := e.manager("198.18.0.7", hostID(7))
	own := acquire(t, m)
	if !own.Reservation() {
		t.Fatalf("got %+v, want the reservation", own)
	}
	if val, _, _ := e.raw(t, own); !strings.Contains(val, hostID(7)) {
		t.Fatalf("Acquire left the reservation as %s, want our value", val)
	}
	r.restore(snap, 0)
	returned := runWatched(t, m)
	eventuallyWithin(t, 20*time.Second, "our value written again in the restored etcd", func() error {
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
		if val, _, ok := e.raw(t, own); !ok || !strings.Contains(val, hostID(7)) || !strings.Contains(val, `"BackendType":"vxlan"`) {
			return fmt.Errorf("own key %s (present %v)", val, ok)
		}
		return nil
	})
	if l, _ := m.Own(); l.Subnet != own.Subnet || !l.Reservation() {
		t.Errorf("Own = %+v, want the reservation %s", l, own.Subnet)
	}
}

func runWatched(t *testing.T, m *subnet.Manager) (returned func() (bool, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() { err = m.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("Run did not return 30 s after its context ended")
		}
	})
	return func() (bool, error) {
		select {
		case <-done:
			return true, err
		default:
			return false, nil
		}
	}
}

// TestOwnKeyRecreatedWithBadValueIsTakenOver: our key is deleted and put
// again with a value that is not JSON (an operator meaning to make it a
// reservation, with a typo). It names nobody, so, as after an overwrite in
// place with a bad value, the agent writes its value back and keeps running:
// bad input never takes the node down. The agent is cut off meanwhile and
// the history compacted, so that it sees the key only as recreated, from a
// list, and not deleted first.
func TestOwnKeyRecreatedWithBadValueIsTakenOver(t *testing.T) {
	t.Parallel()
	const bad = `{"PublicIP":"198.18.0.1"`
	for _, tc := range []struct {
		name string
		// revoke also revokes our etcd lease: the value cannot be written
		// back on it, so the agent takes the key over when it recreates
		// its lease.
		revoke bool
	}{{"written back", false}, {"taken over when reacquiring", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, net16)
			m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
			l := acquire(t, m)
			returned := runWatched(t, m)
			<-m.PeersSynced()
			ctx := context.Background()
			inproc := e.srv.InProcessClient(t)
			key := e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
			e.cutOff(t)
			if _, err := inproc.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			resp, err := inproc.Put(ctx, key, bad)
			if err != nil {
				t.Fatal(err)
			}
			if tc.revoke {
				if _, err := inproc.Revoke(ctx, clientv3.LeaseID(l.LeaseID)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := inproc.Compact(ctx, resp.Header.Revision); err != nil {
				t.Fatal(err)
			}
			if err := e.srv.SetLoopback(true); err != nil {
				t.Fatal(err)
			}
			eventuallyWithin(t, 40*time.Second, "our value written back", func() error {
				if ok, err := returned(); ok {
					t.Fatalf("Run returned: %v", err)
				}
				val, id, _ := e.raw(t, l)
				own, _ := m.Own()
				if !strings.Contains(val, `"198.18.0.1"`) || !strings.Contains(val, hostID(1)) || id == 0 || id != own.LeaseID {
					return fmt.Errorf("value %s on etcd lease %x, Own on %x", val, id, own.LeaseID)
				}
				if tc.revoke == (id == l.LeaseID) {
					return fmt.Errorf("on etcd lease %x, first %x", id, l.LeaseID)
				}
				return nil
			})
		})
	}
}

// keepAliveTap is a clientv3.Lease that counts what happens to KeepAlive
// calls: the answers for each lease, and the channels the etcd client closed
// on its own (not at the end of the caller's context).
type keepAliveTap struct {
	clientv3.Lease
	mu       sync.Mutex
	calls    int
	answered map[clientv3.LeaseID]int // calls answered at least once
	gaveUp   int
}

func (k *keepAliveTap) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	in, err := k.Lease.KeepAlive(ctx, id)
	if err != nil {
		return in, err
	}
	k.mu.Lock()
	k.calls++
	k.mu.Unlock()
	out := make(chan *clientv3.LeaseKeepAliveResponse, cap(in))
	go func() {
		defer close(out)
		first := true
		for resp := range in {
			if first {
				k.mu.Lock()
				k.answered[resp.ID]++
				k.mu.Unlock()
				first = false
			}
			select {
			case out <- resp:
			default:
			}
		}
		if ctx.Err() == nil {
			k.mu.Lock()
			k.gaveUp++
			k.mu.Unlock()
		}
	}()
	return out, nil
}

func (k *keepAliveTap) counts(id clientv3.LeaseID) (gaveUp, answered int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.gaveUp, k.answered[id]
}

// TestKeepAliveUnansweredAtStartKeepsLease: etcd cannot be reached when Run
// starts, so the etcd client gives the first keepalive up after its dial
// timeout plus a second, although the lease has most of its hour left. The
// lease stays held, and is kept alive again once etcd answers: no lost
// lease, no new etcd lease.
func TestKeepAliveUnansweredAtStartKeepsLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, net16)
	tap := &keepAliveTap{Lease: e.cli.Lease, answered: map[clientv3.LeaseID]int{}}
	e.cli.Lease = tap
	var lost lostReasons
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
		c.OnLeaseState = lost.record
	})
	l := acquire(t, m)
	id := clientv3.LeaseID(l.LeaseID)
	// Not e.cutOff: with no stream open the client sends no pings and never
	// notices. Its connection stays up, and nothing sent on it is answered.
	if err := e.srv.SetLoopback(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.SetLoopback(true) })
	returned := runWatched(t, m)
	noLoss := func() {
		t.Helper()
		if r := lost.get(); len(r) > 0 {
			t.Fatalf("lease reported lost: %q", r)
		}
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
	}
	eventuallyWithin(t, 30*time.Second, "the etcd client gives the first keepalive up", func() error {
		if n, _ := tap.counts(id); n == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	noLoss()
	if err := e.srv.SetLoopback(true); err != nil {
		t.Fatal(err)
	}
	eventuallyWithin(t, 40*time.Second, "lease kept alive again", func() error {
		noLoss()
		if _, n := tap.counts(id); n == 0 {
			return errors.New("no answer yet")
		}
		return nil
	})
	noLoss()
	if own, _ := m.Own(); own.LeaseID != l.LeaseID || m.Stats.Reacquired.Load() != 0 {
		t.Fatalf("own lease %x (first %x), Reacquired %d", own.LeaseID, l.LeaseID, m.Stats.Reacquired.Load())
	}
	if _, lid, _ := e.raw(t, l); lid != l.LeaseID {
		t.Fatalf("key on etcd lease %x, want %x", lid, l.LeaseID)
	}
}

// silentLessor is a clientv3.Lease whose keepalives are never answered, as
// on a lease stream stuck on a member that hangs: only renewals sent on a
// stream of their own reach etcd.
type silentLessor struct{ clientv3.Lease }

func (silentLessor) KeepAlive(ctx context.Context, _ clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse)
	go func() {
		<-ctx.Done()
		close(ch)
	}()
	return ch, nil
}

// TestDirectRenewalIsReported: the etcd client's keepalives go unanswered,
// while the renewals that Run sends itself when one is overdue are answered.
// Those keep the lease alive past its TTL, and each answer is reported to
// OnLeaseRenewed with the lease's TTL less the time since the renewal was
// sent (here well under a second), so that the time left the agent
// exports (agentd_lease_ttl_remaining_seconds), which otherwise sees only
// the client's answers, does not count down to 0 while the lease is renewed.
// Before, no renewal was reported.
func TestDirectRenewalIsReported(t *testing.T) {
	e := newEnv(t, net16)
	e.cli.Lease = silentLessor{Lease: e.cli.Lease}
	const ttl = 6 * time.Second
	var (
		lost    lostReasons
		mu      sync.Mutex
		renewed []string // lease and time left, as reported
		wrong   bool     // a lease other than ours, or a time left more than 3 s short of the TTL
		l       subnet.Lease
	)
	m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
		c.TTL = ttl
		c.OnLeaseState = lost.record
		c.OnLeaseRenewed = func(id int64, left time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			renewed = append(renewed, fmt.Sprintf("%x %v", id, left))
			wrong = wrong || id != int64(l.LeaseID) || left > ttl || left <= ttl-3*time.Second
		}
	})
	l = acquire(t, m)
	returned := runWatched(t, m)
	// A renewal is overdue TTL/3 + TTL/6 + 1 s (4 s) after the last answer:
	// the second is past the TTL of the first.
	eventuallyWithin(t, 4*ttl, "two direct renewals reported", func() error {
		if r := lost.get(); len(r) > 0 {
			t.Fatalf("lease reported lost: %q", r)
		}
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if wrong {
			t.Fatalf("renewals reported: %q, want each of lease %x with %v less the time since it was sent (under 3 s: a round trip to a local etcd, on a loaded machine)", renewed, l.LeaseID, ttl)
		}
		if len(renewed) < 2 {
			return fmt.Errorf("renewals reported: %q", renewed)
		}
		return nil
	})
	if own, _ := m.Own(); own.LeaseID != l.LeaseID || m.Stats.Reacquired.Load() != 0 {
		t.Fatalf("own lease %x (first %x), Reacquired %d", own.LeaseID, l.LeaseID, m.Stats.Reacquired.Load())
	}
}

// TestOwnKeyRecreatedOnlyIfNoOtherHostOverlaps: our key is deleted while
// another host's key holds a subnet overlapping ours. Recreating ours would
// route the same addresses to two hosts, so Run stops with ErrLeaseLost, as
// when our exact key is taken. A key with an unusable value, which peers
// skip, and a key next to ours do not stop it. In a dual-stack network
// (our key 10.244.5.0-24&fc00:0:0:5::-64) the IPv6 subnet counts alone: a
// key whose IPv4 subnet is elsewhere but whose IPv6 subnet overlaps ours
// stops it too. So does a key agentd skips but flanneld reads as a lease of
// an overlapping subnet (FlanneldSubnetKey), which flanneld hosts route to
// its PublicIP; before, such keys were passed over and ours was recreated.
// Keys flanneld skips too (a leading zero in an octet; a value flanneld's
// decoder refuses, whether agentd can read it or not) do not stop it, nor
// does one naming our public IP and no other host's identity: flanneld
// hosts route its subnet to this host too. Before, a key only flanneld
// reads stopped it when agentd could read the value, whatever its
// PublicIP, and not when only flanneld could.
func TestOwnKeyRecreatedOnlyIfNoOtherHostOverlaps(t *testing.T) {
	t.Parallel()
	other := fmt.Sprintf(`{"PublicIP":"198.18.0.9","BackendType":"vxlan","HostID":%q}`, hostID(9))
	const dual = `{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}`
	for _, tc := range []struct {
		name, config, key, value string
		lost                     bool
	}{
		{"wider", net16, "10.244.4.0-23", other, true},
		{"narrower", net16, "10.244.5.128-25", other, true},
		{"wider, unusable value", net16, "10.244.4.0-23", `{"PublicIP":`, false},
		{"wider, value only flanneld reads", net16, "10.244.4.0-23", `{"PublicIP":"198.18.0.9","HostID":7}`, true},
		{"wider, no PublicIP, which flanneld reads as 0.0.0.0", net16, "10.244.4.0-23", `{}`, true},
		{"wider, value only flanneld reads, our public IP", net16, "10.244.4.0-23", `{"PublicIP":"198.18.0.1","HostID":7}`, false},
		{"next to ours", net16, "10.244.6.0-23", other, false},
		{"IPv6 only, same", dual, "10.244.9.0-24&fc00:0:0:5::-64", other, true},
		{"IPv6 only, wider", dual, "10.244.9.0-24&fc00:0:0:4::-63", other, true},
		{"IPv6 next to ours", dual, "10.244.9.0-24&fc00:0:0:6::-63", other, false},
		{"flanneld only, same", net16, "10.244.5.0-024", other, true},
		{"flanneld only, junk before", net16, "old/10.244.5.0-24", other, true},
		{"flanneld only, wider, host bits", net16, "10.244.5.9-23", other, true},
		{"flanneld only, IPv6 spelled otherwise", dual, "10.244.9.0-24&fc00:0000:0:5::-64", other, true},
		{"flanneld only, unusable value", net16, "10.244.5.0-024", `{"PublicIP":`, false},
		{"flanneld skips it too", net16, "10.244.05.0-24", other, false},
		{"flanneld only, value agentd cannot read but flanneld does", net16, "10.244.5.0-024", `{"PublicIP":"198.18.0.9","HostID":7}`, true},
		{"flanneld only, value flanneld skips but agentd reads", net16, "10.244.5.0-024", `{"PublicIP":"198.18.0.9","PublicIPv6":""}`, false},
		{"flanneld only, our public IP", net16, "10.244.5.0-024", `{"PublicIP":"198.18.0.1","BackendType":"vxlan"}`, false},
		{"flanneld only, wider, our public IP", net16, "10.244.4.0-023", `{"PublicIP":"198.18.0.1"}`, false},
		{"flanneld only, our public IP, another host's identity", net16, "10.244.5.0-024", fmt.Sprintf(`{"PublicIP":"198.18.0.1","HostID":%q}`, hostID(2)), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, tc.config)
			m := e.manager("198.18.0.1", hostID(1), pinned("10.244.5.0/24"))
			l := acquire(t, m)
			want := "10.244.5.0-24"
			if tc.config == dual {
				want += "&fc00:0:0:5::-64"
			}
			if l.Key() != want {
				t.Fatalf("acquired %s, want %s", l.Key(), want)
			}
			returned := runWatched(t, m)
			<-m.PeersSynced()
			ctx := context.Background()
			if _, err := e.cli.Put(ctx, prefix+"/subnets/"+tc.key, tc.value); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cli.Delete(ctx, e.reg.LeaseKey(l.Subnet, l.IPv6Subnet)); err != nil {
				t.Fatal(err)
			}
			if tc.lost {
				eventually(t, "Run stops", func() error {
					ok, err := returned()
					if !ok {
						if _, _, back := e.raw(t, l); back {
							t.Fatalf("our key %s recreated, overlapping %s", l.Key(), tc.key)
						}
						return errors.New("still running")
					}
					if !errors.Is(err, subnet.ErrLeaseLost) || !strings.Contains(err.Error(), tc.key) {
						t.Fatalf("Run: %v, want ErrLeaseLost naming %s", err, tc.key)
					}
					return nil
				})
				if _, _, ok := e.raw(t, l); ok {
					t.Fatal("our key recreated inside another host's")
				}
				return
			}
			eventually(t, "our key recreated", func() error {
				if ok, err := returned(); ok {
					t.Fatalf("Run returned: %v", err)
				}
				if m.Stats.Reacquired.Load() < 1 {
					return errors.New("not yet")
				}
				if _, id, ok := e.raw(t, l); !ok || id == 0 {
					return errors.New("key absent")
				}
				return nil
			})
		})
	}
}

// lostReasons collects the reasons a Manager reports its lease lost, from
// its OnLeaseState callback (record), for a test that must see none.
type lostReasons struct {
	mu      sync.Mutex
	reasons []string
}

func (l *lostReasons) record(held bool, reason string) {
	if held {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reasons = append(l.reasons, reason)
}

func (l *lostReasons) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reasons)
}

// TestEtcdReplacedPastOurRevisionWhileAway: etcd is emptied, or restored
// from a snapshot, while this agent cannot reach it, and its new history
// passes the revision the agent had reached before the agent is back: a
// revision read then is not below the one seen, though the agent's leases
// come from the old history, and the clientv3 watch resumes after the old
// revision without a word. The agent must still take the new etcd's leases
// (a host that leased its subnet in the new history, below the old revision,
// is a peer; a lease the new history does not hold is not) and hold its own
// key there. Before, it kept the old history's peers and never saw the new
// one, with no relist (found by this test).
func TestEtcdReplacedPastOurRevisionWhileAway(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		// snapshot: restore etcd from a snapshot taken when the agent
		// had seen peers 100 and 101, rather than empty it; after: what
		// happens to peer 101 after the snapshot, in the old history only.
		snapshot bool
		after    string // "put" (it is put then, not before), "delete"
		// reservation: our key is a reservation (see README's "Reserve a
		// subnet") and the snapshot is taken before Acquire wrote our
		// value into it: the new history holds the operator's value.
		reservation bool
		want        string
	}{
		{"emptied", false, "", false, "10.244.7.0/24@198.18.0.7"},
		{"restored, a peer put after the snapshot", true, "put", false,
			"10.244.7.0/24@198.18.0.7 10.244.100.0/24@198.18.0.100"},
		{"restored, a peer deleted after the snapshot", true, "delete", false,
			"10.244.7.0/24@198.18.0.7 10.244.100.0/24@198.18.0.100 10.244.101.0/24@198.18.0.101"},
		{"restored from before our reservation was taken", true, "", true, "10.244.7.0/24@198.18.0.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testReplacedPastOurRevision(t, tc.snapshot, tc.after, tc.reservation, tc.want)
		})
	}
}

func testReplacedPastOurRevision(t *testing.T, snapshot bool, after string, reservation bool, want string) {
	r := startRestartable(t, 0)
	w := r.client() // the test's own, and the other hosts'
	ctx := context.Background()
	if _, err := w.Put(ctx, prefix+"/config", net16); err != nil {
		t.Fatal(err)
	}
	// The agent's client dials through a gate, so that it stays away
	// while the new etcd passes the revision the agent had seen.
	var away atomic.Bool
	dial := etcdtest.NetnsDialer(r.srv.NS)
	cfg := r.srv.ClientConfig()
	cfg.DialOptions = []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		if away.Load() {
			return nil, errors.New("kept away by the test")
		}
		return dial(ctx, addr)
	})}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	reg := subnet.NewRegistry(cli, prefix)
	netCfg, err := reg.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{cli: cli, reg: reg, net: netCfg}
	var snap string
	if reservation {
		if _, err := w.Put(ctx, prefix+"/subnets/10.244.1.0-24", `{"PublicIP":"198.18.0.1"}`); err != nil {
			t.Fatal(err)
		}
		snap = r.snapshot(w)
	}
	a := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"))
	own := acquire(t, a)
	if own.Reservation() != reservation {
		t.Fatalf("acquired %+v, want a reservation: %v", own, reservation)
	}
	returned := runWatched(t, a)
	put := func(n int) int64 {
		t.Helper()
		resp, err := w.Put(ctx, fmt.Sprintf("%s/subnets/10.244.%d.0-24", prefix, n), fmt.Sprintf(`{"PublicIP":"198.18.0.%d"}`, n))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	unrelated := func(n int) int64 {
		t.Helper()
		var rev int64
		for range n {
			resp, err := w.Put(ctx, "/unrelated", "x")
			if err != nil {
				t.Fatal(err)
			}
			rev = resp.Header.Revision
		}
		return rev
	}
	put(100)
	if after != "put" {
		put(101)
	}
	waitPeer(t, a, "10.244.100.0/24", "peer 100 seen")
	if snapshot && !reservation {
		snap = r.snapshot(w)
	}
	// The old history goes on past the snapshot, and the agent sees it
	// there: the new history's first writes are at revisions it had seen.
	seen := unrelated(10)
	switch after {
	case "put":
		seen = put(101)
		waitPeer(t, a, "10.244.101.0/24", "peer 101 seen")
	case "delete":
		resp, err := w.Delete(ctx, prefix+"/subnets/10.244.101.0-24")
		if err != nil {
			t.Fatal(err)
		}
		seen = resp.Header.Revision
		eventually(t, "peer 101 gone", func() error {
			if hasPeer(a, "10.244.101.0/24") {
				return errors.New("not yet")
			}
			return nil
		})
	}

	away.Store(true)
	r.stop()
	eventually(t, "the agent's client notices etcd gone", func() error {
		if st := cli.ActiveConnection().GetState(); st == connectivity.Ready {
			return fmt.Errorf("connection %s", st)
		}
		return nil
	})
	if snapshot {
		r.restore(snap, 0)
	} else {
		r.start(false)
		if _, err := w.Put(ctx, prefix+"/config", net16); err != nil {
			t.Fatal(err)
		}
	}
	// A host leases its subnet in the new history, below the old revision,
	// and the new history passes the old revision.
	rev := put(7)
	if rev >= seen {
		t.Fatalf("new history's lease at revision %d, want below %d", rev, seen)
	}
	unrelated(int(seen - rev + 10))
	away.Store(false)

	eventuallyWithin(t, 40*time.Second, "the new etcd's peers, and our key held", func() error {
		if ok, err := returned(); ok {
			t.Fatalf("Run returned: %v", err)
		}
		if got := peerSubnets(a); got != want {
			return fmt.Errorf("peers %q, want %q; relists %d", got, want, a.Stats.Relists.Load())
		}
		val, id, ok := e.raw(t, own)
		if !ok || !strings.Contains(val, hostID(1)) {
			return fmt.Errorf("own key %s (present %v)", val, ok)
		}
		if l, _ := a.Own(); l.Subnet != own.Subnet || l.LeaseID != id {
			return fmt.Errorf("Own = %s on etcd lease %x, the key is on %x", l.Subnet, l.LeaseID, id)
		}
		return nil
	})
}
