package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestPoolWidenedWhileWaiting: a pool of one subnet (10.244.1.0/24), held
// by another host's key, so a new agent says "out of subnets" and waits.
// The operator raises SubnetMax to 10.244.2.0 with the same Network and
// backend. The waiting agent, which holds no lease yet, takes the new
// config at its next attempt, says so once, and leases 10.244.2.0/24 within
// a few seconds, with no "restart agentd to apply it" and nothing pending in
// /status. Before, it kept retrying with the config it read at its start
// and never leased until restarted.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestPoolWidenedWhileWaiting(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/widen/config": `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"fake"}}`,
		// Another host's reservation: the pool's one subnet is taken.
		"/widen/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2","BackendType":"fake"}`,
	}, poolWidenChild)
}

func poolWidenChild(t *testing.T, etcd string) {
	const prefix = "/widen"
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	log := childLogger(t, logs)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, log)
	defer runChildAgent(t, ctx, a)()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	count := func(what string) int {
		n := 0
		for _, l := range logs.get() {
			if strings.Contains(l, what) {
				n++
			}
		}
		return n
	}
	if err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if count("out of subnets: all 1 subnets") == 0 {
			return errors.New("no out-of-subnets failure logged")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	widened := time.Now()
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 20*time.Second, a.readyErr); err != nil {
		t.Fatalf("SubnetMax raised to 10.244.2.0 while the agent waited for a lease: not ready within 20 s: %v", err)
	}
	t.Logf("ready %v after the pool was widened", time.Since(widened).Round(time.Millisecond))

	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.244.2.1/24"); env.Subnet != want {
		t.Errorf("subnet.env names %s, want %s", env.Subnet, want)
	}
	if n := count("network config changed while waiting for a lease; taking it"); n != 1 {
		t.Errorf("%d lines say the new config was taken, want 1", n)
	}
	if n := count("restart agentd to apply it"); n != 0 {
		t.Errorf("%d lines ask for a restart to apply the config the agent took, want none", n)
	}
	if p := a.obs.status(a.health).ConfigPending; p != nil {
		t.Errorf("/status configPending %+v for the config the agent took, want none", *p)
	}

	// Once the lease is held the config is the running one: a later change
	// is reported, as for any running agent, and not taken.
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.3.0","Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if p := a.obs.status(a.health).ConfigPending; p == nil || !strings.Contains(p.New, "10.244.3.0") {
			return fmt.Errorf("configPending %v", p)
		}
		return nil
	}); err != nil {
		t.Errorf("SubnetMax raised again once the lease is held: %v; want it pending a restart", err)
	}
	if n := count("restart agentd to apply it"); n != 1 {
		t.Errorf("%d lines ask for a restart to apply a change made once the lease was held, want 1", n)
	}
}
