package agent

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// statusOwnRunEnv, when set, makes TestStatusNamesOwnLeaseByRun the child;
// it names the etcd endpoint.
const statusOwnRunEnv = "AGENTD_STATUS_OWN_RUN_TEST_ETCD"

// TestStatusNamesOwnLeaseByRun: once the agent that run assembles is ready,
// /status names its lease (subnet, public IP) and backend, agentctl
// status's first lines: run hands the lease it acquired to the observer.
// The observer tests set it themselves, so without this test run could
// leave that out and every test of the agent package would pass.
func TestStatusNamesOwnLeaseByRun(t *testing.T) {
	if ep := os.Getenv(statusOwnRunEnv); ep != "" {
		statusOwnRunChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestStatusNamesOwnLeaseByRun", statusOwnRunEnv, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	})
}

func statusOwnRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rctx, stop := context.WithCancel(klog.NewContext(ctx, log))
	errc := make(chan error, 1)
	go func() { errc <- a.run(rctx) }()
	defer func() {
		stop()
		if err := waitRun(t, errc); err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}()
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	st := a.obs.status(a.health)
	if want := env.Subnet.Masked().String(); st.Subnet != want || st.PublicIP != "198.18.0.1" || st.Backend != "fake" {
		t.Errorf("/status once ready: subnet %q, publicIP %q, backend %q; want %q (subnet.env's), 198.18.0.1, fake", st.Subnet, st.PublicIP, st.Backend, want)
	}
}
