package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"k8s.io/klog/v2"
)

// TestStatusLeaseNotRecreatedNOSPACE: etcd's NOSPACE alarm lets the
// agent's keepalives through (they are not writes) but refuses new leases.
// A running agent keeps its lease, stays ready and lists the alarm in
// etcdAlarms. Once its lease is lost (revoked here; expired during an
// outage alike), the agent cannot recreate it, and logs so each retry
// ("recreating own lease failed; retrying" with "database space
// exceeded"), but /readyz, /status and STATUS= said only why it was lost
// ("our lease key was deleted") for as long as the alarm lasted. Now the
// reason adds that etcd grants no lease while NOSPACE is raised; the
// agent is ready again with the same subnet once the space is freed.
//
// The agent (fake backend) runs in h1 of a one-host cluster, beside a
// one-member etcd with a quota of 1 MiB on h1's loopback; lease TTL 2 s,
// endpoint checks every second.
func TestStatusLeaseNotRecreatedNOSPACE(t *testing.T) {
	cluster.RunInHost(t, nil, func(t *testing.T, _ string) { leaseNOSPACEChild(t) })
}

func leaseNOSPACEChild(t *testing.T) {
	e, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380", func(c *embed.Config) { c.QuotaBackendBytes = alarmQuota })
	waitReady(t, "etcd", e)
	const ep = "http://127.0.0.1:2379"
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := t.Context()
	if _, err := cli.Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	cfg := hostConfig(t, ep, "/coreos.com/network")
	cfg.SubnetLeaseTTL = 2 * time.Second
	cfg.EtcdEndpointCheckInterval = time.Second
	cfg.HealthzAddr = "127.0.0.1:8471"
	sent := make(chan string, 256)
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	a.health.notify = func(msg string) (bool, error) {
		select {
		case sent <- msg:
		default:
		}
		return true, nil
	}
	rctx, cancel := context.WithCancel(klog.NewContext(ctx, log))
	done := make(chan error, 1)
	go func() { done <- a.run(rctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run after cancel: %v", err)
		}
	}()
	status := func() (Status, error) {
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/status")
		if err != nil {
			return Status{}, err
		}
		var st Status
		return st, json.Unmarshal(body, &st)
	}
	wait := func(step string, ok func(Status) error) {
		t.Helper()
		if err := cluster.Eventually(ctx, 30*time.Second, func() error {
			st, err := status()
			if err != nil {
				return err
			}
			return ok(st)
		}); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
	}
	ownKey := func() (string, clientv3.LeaseID) {
		t.Helper()
		resp, err := cli.Get(ctx, "/coreos.com/network/subnets/", clientv3.WithPrefix())
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("lease keys: %v, %d keys", err, len(resp.Kvs))
		}
		return string(resp.Kvs[0].Key), clientv3.LeaseID(resp.Kvs[0].Lease)
	}
	wait("start", func(st Status) error {
		if !st.Ready {
			return fmt.Errorf("not ready: %s", st.NotReadyReason)
		}
		return nil
	})
	key, lease := ownKey()

	fillUntilNoSpace(t, ctx, cli)
	wait("NOSPACE raised", func(st Status) error {
		if len(st.EtcdAlarms) == 0 || st.EtcdAlarms[0].Alarm != "NOSPACE" {
			return fmt.Errorf("etcdAlarms %+v, want NOSPACE", st.EtcdAlarms)
		}
		return nil
	})
	// Three TTLs of keepalives under the alarm: the same lease, ready.
	for end := time.Now().Add(3 * cfg.SubnetLeaseTTL); time.Now().Before(end); {
		st, err := status()
		if err != nil || !st.Ready {
			t.Fatalf("under NOSPACE with the lease held: %v, ready %v: %s", err, st.Ready, st.NotReadyReason)
		}
		time.Sleep(200 * time.Millisecond) // sampling a state that must hold, not waiting for one
	}
	if k, l := ownKey(); k != key || l != lease {
		t.Fatalf("under NOSPACE: lease key %s, etcd lease %x; want %s, %x kept alive", k, l, key, lease)
	}

	if _, err := cli.Revoke(ctx, lease); err != nil {
		t.Fatal(err)
	}
	const refused = "etcd grants no lease while its NOSPACE alarm is raised"
	wait("lease revoked under NOSPACE", func(st Status) error {
		if st.Ready || !strings.Contains(st.NotReadyReason, "our lease key was deleted; "+refused) {
			return fmt.Errorf("ready %v %q, want not ready, the loss and that etcd grants no lease", st.Ready, st.NotReadyReason)
		}
		return nil
	})
	_, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
	if err != nil || !strings.Contains(string(body), refused) {
		t.Fatalf("/readyz: %v %q, want %q in it", err, body, refused)
	}
	if err := cluster.Eventually(ctx, 10*time.Second, func() error {
		for {
			select {
			case msg := <-sent:
				if strings.Contains(msg, "STATUS=not ready: our lease key was deleted; "+refused) {
					return nil
				}
			default:
				return fmt.Errorf("no STATUS= with %q", refused)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}

	freeSpace(t, ctx, cli, []string{ep})
	wait("space freed", func(st Status) error {
		if !st.Ready {
			return fmt.Errorf("not ready: %s", st.NotReadyReason)
		}
		return nil
	})
	if k, _ := ownKey(); k != key {
		t.Fatalf("after the space was freed: lease key %s, want %s again", k, key)
	}
}
