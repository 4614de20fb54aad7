package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestConfigWatchNewHistory: etcd comes back under a running agent with a
// new history (restored from an older snapshot, emptied, a new cluster), in
// which the network config key is not what the config watch last saw. The
// watch reads the key again once its connection to etcd is back, and the
// pending config (/status configPending, agentd_network_config_pending) is
// what the new history holds. Before, the clientv3 watch resumed after the
// old revision without an error, so nothing was read again until the new
// history got there, if ever: a restore to the running config left a stale
// pending config, and a different config written in the new history
// (or none at all) was not pending. A restore with etcdutl's
// --bump-revision --mark-compacted ends the watch with a compaction, which
// reads the key again too.
//
// The test runs again as a child in a network namespace of its own
// (inOwnNetns), whose loopback carries etcd on 127.0.0.1:2379, stopped and
// started again there with other data; the agent's own client
// (newEtcdClient) connects to it.
func TestConfigWatchNewHistory(t *testing.T) {
	inOwnNetns(t, configWatchNewHistoryChild)
}

const (
	nhRunning = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	nhOther   = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","MTU":1400}}`
	nhKey     = "/nh/config"
)

func configWatchNewHistoryChild(t *testing.T) {
	loopbackUp(t)
	for _, tc := range []struct {
		name string
		// before is the key's value when the snapshot is taken, after
		// the one written then; "" leaves the key as it is.
		before, after string
		// replace replaces etcd, given the snapshot, and writes what the
		// operator writes into the new history.
		replace func(t *testing.T, e *historyEtcd, snap string)
		want    string // what pendingSeen.get returns then
	}{
		{"restored from a snapshot holding the running config", nhRunning, nhOther,
			func(t *testing.T, e *historyEtcd, snap string) { e.restore(t, snap, 0) }, ""},
		{"restored from a snapshot holding another config", nhOther, nhRunning,
			func(t *testing.T, e *historyEtcd, snap string) { e.restore(t, snap, 0) }, "other"},
		{"emptied, another config written", nhRunning, "",
			func(t *testing.T, e *historyEtcd, _ string) { e.empty(t, ""); e.put(t, nhOther, 1) }, "other"},
		{"a new cluster without the key", nhRunning, "",
			func(t *testing.T, e *historyEtcd, _ string) { e.empty(t, "another-cluster") }, "deleted"},
		{"restored with --bump-revision --mark-compacted", nhRunning, nhOther,
			func(t *testing.T, e *historyEtcd, snap string) { e.restore(t, snap, 1000) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := startHistoryEtcd(t)
			// Revisions the new history will not reach soon.
			e.put(t, tc.before, 50)
			cfg := DefaultConfig()
			cfg.EtcdEndpoints = []string{historyEtcdURL}
			cli, err := newEtcdClient(&cfg, logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			p := &pendingSeen{}
			running, err := subnet.ParseConfig([]byte(nhRunning))
			if err != nil {
				t.Fatal(err)
			}
			w := &configWatch{log: logr.Discard(), cli: cli.Client, key: nhKey, running: running,
				check: func(*subnet.Config) error { return nil }, pending: p.set}
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(ctx)
			}()
			defer wg.Wait()
			defer cancel()

			wait := func(what, want string, within time.Duration) time.Duration {
				t.Helper()
				start := time.Now()
				err := cluster.Eventually(ctx, within, func() error {
					if got := p.get(); got != want {
						return fmt.Errorf("pending %q, want %q", got, want)
					}
					return nil
				})
				if err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				return time.Since(start)
			}
			wait("watch started", pendingOf(tc.before), 30*time.Second)
			snap := e.snapshot(t)
			if tc.after != "" {
				e.put(t, tc.after, 20)
				wait("key rewritten", pendingOf(tc.after), 30*time.Second)
			}
			tc.replace(t, e, snap)
			took := wait("etcd back with a new history", tc.want, 30*time.Second)
			t.Logf("pending right %v after etcd was back", took.Round(time.Millisecond))
		})
	}
}

// pendingOf is what pendingSeen.get returns while the key holds value.
func pendingOf(value string) string {
	if value == nhRunning {
		return ""
	}
	return "other"
}

// pendingSeen keeps the last pending config a configWatch told.
type pendingSeen struct {
	mu sync.Mutex
	p  *ConfigPending
}

func (s *pendingSeen) set(p *ConfigPending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p = p
}

// get returns "other" while nhOther is pending, "deleted" while the key's
// deletion is, "" while nothing is.
func (s *pendingSeen) get() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.p == nil:
		return ""
	case s.p.Deleted:
		return "deleted"
	case s.p.NewBackend == `{"Type":"vxlan","MTU":1400}`:
		return "other"
	}
	return fmt.Sprintf("%+v", *s.p)
}

const historyEtcdURL = "http://127.0.0.1:2379"

// historyEtcd is a single-member etcd on 127.0.0.1:2379 that a test
// replaces by one with a new history on the same endpoint: the same member
// name, URLs and (unless told) cluster token, so the same member and
// cluster IDs.
type historyEtcd struct {
	stop func()
	n    int
}

func startHistoryEtcd(t *testing.T) *historyEtcd {
	e := &historyEtcd{}
	e.start(t, t.TempDir(), "")
	return e
}

// start starts the member in dir, with cluster token token ("" for
// embed's default).
func (e *historyEtcd) start(t *testing.T, dir, token string) {
	t.Helper()
	m, stop := startMember(t, "test", 2379, 2380, "test=http://127.0.0.1:2380", func(c *embed.Config) {
		c.Dir = dir
		if token != "" {
			c.InitialClusterToken = token
		}
	})
	waitReady(t, "etcd", m)
	e.stop = stop
}

// empty replaces etcd by an empty one.
func (e *historyEtcd) empty(t *testing.T, token string) {
	t.Helper()
	e.stop()
	e.start(t, t.TempDir(), token)
}

// restore replaces etcd by one restored from snap, as etcdutl snapshot
// restore does it; bump, when not 0, is its --bump-revision with
// --mark-compacted.
func (e *historyEtcd) restore(t *testing.T, snap string, bump uint64) {
	t.Helper()
	e.stop()
	dir := filepath.Join(t.TempDir(), "restored")
	cfg := embed.NewConfig()
	err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath:        snap,
		Name:                "test",
		OutputDataDir:       dir,
		PeerURLs:            []string{"http://127.0.0.1:2380"},
		InitialCluster:      "test=http://127.0.0.1:2380",
		InitialClusterToken: cfg.InitialClusterToken,
		RevisionBump:        bump,
		MarkCompacted:       bump != 0,
	})
	if err != nil {
		t.Fatalf("restore snapshot %s: %v", snap, err)
	}
	e.start(t, dir, "")
}

// client is a client of the etcd running now, as an operator's tool makes
// one: a client of the one before finds the new one only after gRPC's
// reconnect backoff.
func (e *historyEtcd) client(t *testing.T) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{historyEtcdURL}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// put writes value into the config key n times.
func (e *historyEtcd) put(t *testing.T, value string, n int) {
	t.Helper()
	c := e.client(t)
	defer c.Close()
	for range n {
		if _, err := c.Put(t.Context(), nhKey, value); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshot saves a snapshot of etcd to a file and returns its path.
func (e *historyEtcd) snapshot(t *testing.T) string {
	t.Helper()
	c := e.client(t)
	defer c.Close()
	rc, err := c.Snapshot(t.Context())
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	defer rc.Close()
	e.n++
	path := filepath.Join(t.TempDir(), fmt.Sprintf("snapshot-%d.db", e.n))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
