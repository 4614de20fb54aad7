package agent

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestWedgedLoopFailsHealthzByRun: once the agent that run assembles is
// ready, a reconcile pass that never returns (a kernel or iptables call
// wedged) fails /healthz once the loop has not turned for its limit (1m3s
// at --resync-interval 1s), so that kubelet or systemd's watchdog restarts
// the agent, while a loop that turns passes it however long the agent
// runs: run makes the health expect the loop's heartbeat, and each pass
// gives one. The
// liveness tests (TestLivenessHeartbeat) set that themselves, so without
// this test run could leave it out and every test would pass: then a wedged
// agent answered /healthz 200 for ever. The health's clock is the test's.
func TestWedgedLoopFailsHealthzByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, wedgedLoopRunChild)
}

// wedgingBackend is a fakeBackend whose passes, once wedge is set, close
// wedged and return only at their context's end.
type wedgingBackend struct {
	fakeBackend
	wedge  atomic.Bool
	wedged chan struct{}
}

func (b *wedgingBackend) Reconcile(ctx context.Context, own subnet.Lease, peers []subnet.Lease) (backend.Result, error) {
	if b.wedge.Load() {
		close(b.wedged)
		<-ctx.Done()
		return backend.Result{}, ctx.Err()
	}
	return b.fakeBackend.Reconcile(ctx, own, peers)
}

func wedgedLoopRunChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	log := funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
	a := newFakeAgent(cfg, log)
	be := &wedgingBackend{wedged: make(chan struct{})}
	a.backends["fake"] = func(backend.Config) (backend.Backend, error) { return be, nil }
	clock := newStepClock()
	a.health.now = clock.nowFunc()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runReadyChildAgent(t, ctx, a)()
	healthz := "http://" + cfg.HealthzAddr + "/healthz"
	// A loop that turns keeps /healthz at 200 however long the agent
	// runs: each pass beats (the next one within the resync interval).
	clock.add(livenessLimit(cfg.ResyncInterval) + 5*time.Second)
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		code, body, err := httpGet(healthz)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/healthz: %d %q", code, body)
		}
		return err
	})
	if err != nil {
		t.Errorf("past the limit with the loop turning: %v; want 200", err)
	}
	be.wedge.Store(true)
	// The resync ticker makes a pass every second.
	select {
	case <-be.wedged:
	case <-ctx.Done():
		t.Fatal("no reconcile pass since the backend wedges them")
	}
	if code, body, err := httpGet(healthz); err != nil || code != http.StatusOK {
		t.Errorf("/healthz as the pass wedges: %d %q %v, want 200", code, body, err)
	}
	clock.add(livenessLimit(cfg.ResyncInterval) + 5*time.Second)
	want := "not ok: reconcile loop has not run for 1m8s (limit 1m3s)\n"
	if code, body, err := httpGet(healthz); err != nil || code != http.StatusServiceUnavailable || string(body) != want {
		t.Errorf("/healthz past the limit with the pass wedged: %d %q %v, want 503 %q", code, body, err, want)
	}
}
