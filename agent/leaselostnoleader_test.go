package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// TestLeaseLostForWantOfLeaderSaysSo: etcd loses its quorum until our
// lease's TTL has passed, and the member left answers without a leader:
// OWN LEASE LOST says that etcd has no leader, the cause an operator can act
// on. Before 2026-12-07 its reason ended in "context deadline exceeded": a
// member without a leader holds a renewal until a leader can answer it,
// and the lease manager's wait for the answer ran out first; only the next
// endpoint check named the cause.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries a two-member etcd cluster:
//
//	child's namespace, lo 127.0.0.1:
//	  member a  client :2379  peer :2380
//	  member b  client :2381  peer :2382   stopped: a is left without quorum
//
// The lease manager's client is the agent's (dialEtcd), given both
// endpoints.
func TestLeaseLostForWantOfLeaderSaysSo(t *testing.T) {
	inOwnNetns(t, leaseLostForWantOfLeaderChild)
}

func leaseLostForWantOfLeaderChild(t *testing.T) {
	stopB := twoMembers(t)
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379", "http://127.0.0.1:2381"}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := t.Context()
	if _, err := c.Put(ctx, cfg.EtcdPrefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`); err != nil {
		t.Fatal(err)
	}
	reg := subnet.NewRegistry(c.Client, cfg.EtcdPrefix)
	netCfg, err := reg.GetConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var logs logLines
	var (
		mu   sync.Mutex
		lost []string
	)
	m := subnet.NewManager(reg, netCfg, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: fmt.Sprintf("%032x", 1), TTL: 3 * time.Second,
		Logger: funcr.New(logs.add, funcr.Options{}),
		OnLeaseState: func(held bool, reason string) {
			mu.Lock()
			defer mu.Unlock()
			if !held {
				lost = append(lost, reason)
			}
		},
	})
	if _, err := m.Acquire(ctx, "vxlan", json.RawMessage(`{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}`)); err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Run(rctx) }()
	defer func() {
		stop()
		<-done
	}()

	stopB()
	stopped := time.Now()
	err = cluster.Eventually(ctx, 60*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(lost) == 0 {
			return fmt.Errorf("our lease not reported lost")
		}
		return nil
	})
	if err != nil {
		t.Fatalf("b stopped: %v", err)
	}
	mu.Lock()
	reason := lost[0]
	mu.Unlock()
	t.Logf("reported lost %v after b stopped: %s", time.Since(stopped).Round(time.Millisecond), reason)
	if !strings.Contains(reason, "etcd has no leader") {
		t.Fatalf("OWN LEASE LOST's reason %q does not say that etcd has no leader", reason)
	}
	var logged bool
	for _, l := range logs.get() {
		logged = logged || strings.Contains(l, `"msg"="OWN LEASE LOST; taking the same subnet back"`) && strings.Contains(l, "etcd has no leader")
	}
	if !logged {
		t.Fatalf("logged %q, want OWN LEASE LOST saying that etcd has no leader", logs.get())
	}
}
