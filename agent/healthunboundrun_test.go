package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestHealthUnboundSentByRun: while another program holds the health
// server's port, the agent that Run assembles says so in STATUS= (systemctl
// status), since /status cannot, and stops saying it once the port is free
// and bound: Run tells the health both. TestSdNotifyHealthUnbound gives the
// health the address itself, and TestHealthAddrUnavailableAtStart checks
// the log and the bind, so without this test Run could leave either out and
// every test would pass.
func TestHealthUnboundSentByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, healthUnboundRunChild)
}

func healthUnboundRunChild(t *testing.T, etcd string) {
	notify := fakeNotifySocket(t)
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	holder, err := net.Listen("tcp", cfg.HealthzAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runReadyChildAgent(t, ctx, a)()
	unbound := "; health server not listening on " + cfg.HealthzAddr + " "
	var sent []string
	// status returns nil once the last STATUS= sent so far is want
	// (ready), with unbound or without.
	status := func(with bool) func() error {
		return func() error {
			sent = append(sent, notifications(t, notify)...)
			last := ""
			for _, m := range sent {
				for l := range strings.Lines(m) {
					if s, ok := strings.CutPrefix(strings.TrimSuffix(l, "\n"), "STATUS="); ok {
						last = s
					}
				}
			}
			if strings.HasPrefix(last, "ready") && strings.Contains(last, unbound) == with {
				return nil
			}
			return fmt.Errorf("last STATUS= sent: %q; want ready, with %q: %v", last, unbound, with)
		}
	}
	if err := cluster.Eventually(ctx, 30*time.Second, status(true)); err != nil {
		t.Fatalf("ready, the health port held by another program: %v", err)
	}
	holder.Close()
	if err := cluster.Eventually(ctx, 60*time.Second, status(false)); err != nil {
		t.Fatalf("the health port let go: %v", err)
	}
}
