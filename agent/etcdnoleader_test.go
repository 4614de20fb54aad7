package agent

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// TestEndpointCheckNoLeader: a member that answers but has no leader is
// down for the endpoint checker, with that reason. etcd answers Status from
// memory without a leader too, so the check counted such a member up.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries a two-member etcd cluster:
//
//	child's namespace, lo 127.0.0.1:
//	  member a  client :2379  peer :2380
//	  member b  client :2381  peer :2382   stopped halfway: a is left without quorum
//
// Both endpoints are checked first while the cluster has its leader (the
// control: both up); then b is stopped, and once a says it has no leader,
// one round of the checker must report a down with "no leader" and log it
// as answering without a leader, not as unreachable.
func TestEndpointCheckNoLeader(t *testing.T) {
	inOwnNetns(t, endpointCheckNoLeaderChild)
}

func endpointCheckNoLeaderChild(t *testing.T) {
	stopB := twoMembers(t)
	epA, epB := "http://127.0.0.1:2379", "http://127.0.0.1:2381"
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{epA, epB}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()

	for _, ep := range cfg.EtcdEndpoints {
		if _, err := c.checkEndpoint(ctx, ep); err != nil {
			t.Fatalf("%s with a leader: %v", ep, err)
		}
	}

	stopB()
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		resp, err := c.Status(sctx, epA)
		switch {
		case err != nil:
			return err
		case resp.Leader != 0:
			return fmt.Errorf("a still has leader %x", resp.Leader)
		}
		t.Logf("a without b: leader 0, errors %q", resp.Errors)
		return nil
	})
	if err != nil {
		t.Fatalf("b stopped: %v", err)
	}

	var logs logLines
	var last []EndpointStatus
	chk := &endpointChecker{
		endpoints: cfg.EtcdEndpoints,
		status:    c.checkEndpoint,
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    func(s []EndpointStatus, _ []EtcdAlarm, _ time.Time) { last = s },
	}
	chk.check(ctx, make([]EndpointStatus, len(cfg.EtcdEndpoints)))
	if len(last) != 2 || last[0].Up || !strings.Contains(last[0].Error, "no leader") {
		t.Fatalf("a without a leader reported as %+v, want down with \"no leader\"", last)
	}
	if last[1].Up || !strings.Contains(last[1].Error, "connection refused") {
		t.Fatalf("b stopped reported as %+v, want down, connection refused", last[1])
	}
	var logged bool
	for _, l := range logs.get() {
		if !strings.Contains(l, `"endpoint"="`+epA+`"`) {
			continue
		}
		if strings.Contains(l, "unreachable") {
			t.Errorf("a, which answered, logged as unreachable: %s", l)
		}
		logged = logged || strings.Contains(l, `"msg"="etcd endpoint answers but has no leader;`) && strings.Contains(l, "no leader") &&
			strings.Contains(l, `"serving"="0 of 2"`)
	}
	if !logged {
		t.Fatalf("logged %q, want a line for a saying it answers but has no leader", logs.get())
	}
}

// twoMembers starts the two-member etcd cluster of the no-leader tests on
// the child's loopback (a: client :2379, peer :2380; b: :2381, :2382) and
// waits until it serves; stopB stops b, which leaves a without quorum.
func twoMembers(t *testing.T) (stopB func()) {
	t.Helper()
	loopbackUp(t)
	const members = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2382"
	a, _ := startMember(t, "a", 2379, 2380, members)
	b, stopB := startMember(t, "b", 2381, 2382, members)
	waitReady(t, "etcd cluster", a, b)
	return stopB
}

// startMember starts member name of cluster (etcd's --initial-cluster) on
// 127.0.0.1, with the settings opts make; stop stops it, as the end of the
// test does.
func startMember(t *testing.T, name string, clientPort, peerPort int, cluster string, opts ...func(*embed.Config)) (e *embed.Etcd, stop func()) {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = name
	cfg.Dir = t.TempDir()
	cfg.UnsafeNoFsync = true
	cfg.EnableGRPCGateway = false
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", clientPort)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", peerPort)}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cluster
	for _, o := range opts {
		o(cfg)
	}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd member %s: %v", name, err)
	}
	stop = sync.OnceFunc(e.Close) // Close panics when called twice
	t.Cleanup(stop)
	return e, stop
}

// waitReady waits up to 30 s for each of the members to be ready, which
// those of a cluster are once it has a leader; what names them in the
// failure.
func waitReady(t *testing.T, what string, members ...*embed.Etcd) {
	t.Helper()
	for _, m := range members {
		select {
		case <-m.Server.ReadyNotify():
		case <-time.After(30 * time.Second):
			t.Fatalf("%s not ready after 30s", what)
		}
	}
}
