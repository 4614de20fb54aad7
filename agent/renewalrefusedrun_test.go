package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestRenewalRefusedShownByRun: in the agent that run assembles, etcd's
// refusal to renew our lease reaches /status etcdError (agentctl status)
// while the lease still lives: the lease manager's OnRenewalRefused is the
// observer's. TestStatusSaysRenewalRefused gives the observer the refusal
// itself, so without this test run could leave the hook out and every test
// would pass: then /status said "etcd connected" with no error until the
// lease was lost, and only the log said why.
//
// Here auth is turned on in etcd after the agent has its lease, and the
// agent has no user: etcd refuses each renewal ("user name is empty"). The
// TTL is 15 s: the manager renews the lease itself once the client's
// renewal is overdue (8.5 s after the last answer), and the lease lives
// until 15 s; the test stops the agent once /status says it.
func TestRenewalRefusedShownByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, renewalRefusedRunChild)
}

func renewalRefusedRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.SubnetLeaseTTL = 15 * time.Second
	cfg.EtcdEndpointCheckInterval = 0
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, log)
	defer runReadyChildAgent(t, ctx, a)()

	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for _, step := range []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("turn auth on in etcd: %v", err)
		}
	}

	const want = "etcd refuses to renew our lease, which ends at "
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		st := a.obs.status(a.health)
		if !st.EtcdConnected || !strings.HasPrefix(st.EtcdError, want) || !strings.Contains(st.EtcdError, "user name is empty") {
			return fmt.Errorf("/status: etcdConnected %v, etcdError %q; want connected, %q… user name is empty", st.EtcdConnected, st.EtcdError, want)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("etcd refusing to renew our lease: %v", err)
	}
}
