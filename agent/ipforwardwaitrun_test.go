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
)

// TestIPForwardingOffSaidWhileWaiting: the agent that run assembles says in
// /status ipForwardingOff that net.ipv4.ip_forward is 0 from its start,
// while it waits for a network config that etcd does not hold yet, not
// only from its reconcile loop's first pass, which needs a lease.
// TestAgentSaysIPForwardingOff starts with a config, so without this test
// run could leave its first check out and every test would pass.
func TestIPForwardingOffSaidWhileWaiting(t *testing.T) {
	cluster.RunInHost(t, map[string]string{}, ipForwardWaitRunChild)
}

func ipForwardWaitRunChild(t *testing.T, etcd string) {
	const file = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(file); err != nil || string(b) != "0\n" {
		t.Fatalf("%s in h1 at the start: %q, %v; want 0, as in a fresh namespace", file, b, err)
	}
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runChildAgent(t, ctx, a)()
	const waiting = "no lease acquired yet: cannot read the network config"
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		st := a.obs.status(a.health)
		if !strings.HasPrefix(st.NotReadyReason, waiting) || st.IPForwardingOff == "" {
			return fmt.Errorf("/status: notReadyReason %q, ipForwardingOff %q; want %q…, and ip_forward 0 said", st.NotReadyReason, st.IPForwardingOff, waiting)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("waiting for the network config with ip_forward 0: %v", err)
	}
}
