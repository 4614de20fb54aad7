package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// netnsClaimStatusRunEnv, when set, makes TestNetnsClaimNotHeldInStatusByRun
// the child; it names the etcd endpoint.
const netnsClaimStatusRunEnv = "AGENTD_NETNS_CLAIM_STATUS_TEST_ETCD"

// TestNetnsClaimNotHeldInStatusByRun: the agent that run assembles beside a
// process of another user holding its claim on the network namespace says
// so in /status netnsClaimNotHeld (agentctl status) from its start, and
// nothing once it has taken the claim after the squatter exited: run gives
// the observer the squatters at the start and the retake's news after.
// TestSquattedNetnsClaimRetaken checks the claim and the log, so without
// this test run could leave either out and every test would pass.
func TestNetnsClaimNotHeldInStatusByRun(t *testing.T) {
	if ep := os.Getenv(netnsClaimStatusRunEnv); ep != "" {
		netnsClaimStatusRunChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestNetnsClaimNotHeldInStatusByRun", netnsClaimStatusRunEnv, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	})
}

func netnsClaimStatusRunChild(t *testing.T, etcd string) {
	free := startNetnsSquatter(t)
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
	want := "a process of another user holds " + netnsClaimAddr
	if got := a.obs.status(a.health).NetnsClaimNotHeld; !strings.HasPrefix(got, want) {
		t.Errorf("ready beside a squatter of the claim: /status netnsClaimNotHeld %q; want %q…", got, want)
	}
	free()
	err := cluster.Eventually(ctx, 3*netnsClaimRetryEvery, func() error {
		if got := a.obs.status(a.health).NetnsClaimNotHeld; got != "" {
			return fmt.Errorf("/status netnsClaimNotHeld %q; want none once the claim is taken", got)
		}
		return nil
	})
	if err != nil {
		t.Errorf("the squatter exited: %v", err)
	}
}
