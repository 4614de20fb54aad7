package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// flapBackend fails every other pass with one message, as host-gw does
// while its external interface is set down and up again and again, or
// every pass once down is set.
type flapBackend struct {
	fakeBackend
	down atomic.Bool
}

func (b *flapBackend) Reconcile(ctx context.Context, _ subnet.Lease, _ []subnet.Lease) (backend.Result, error) {
	if b.passes.Add(1)%2 == 0 || b.down.Load() {
		return backend.Result{}, errors.New("external interface eth0 is down: …")
	}
	return backend.Result{}, ctx.Err()
}

// TestFlappingFailureLoggedBounded: a hundred passes alternating between
// one failure and success log the failure and its recovery once at V(0),
// not two lines a flap; the failure still there a minute later is logged
// again, with the number of flaps held back.
func TestFlappingFailureLoggedBounded(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
	)
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 0})
	failLines := func() (n int, last string) {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, "reconcile failed") || strings.Contains(l, "succeeded again") {
				n, last = n+1, l
			}
		}
		return n, last
	}
	var now atomic.Int64
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	h, _ := testHealth(t)
	a := &agent{cfg: Config{ResyncInterval: time.Hour}, log: log, health: h, obs: newObserver(), iptDone: true}
	a.changes.now = func() time.Time { return time.Unix(0, now.Load()) }
	be := &flapBackend{}
	leases := newFakeLeases(lease("10.244.1.0/24", "198.18.0.1"))
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, stop := startReconcileLoop(t, a, be, leases, netCfg)
	defer stop()
	for range 100 {
		leases.change <- struct{}{}
	}
	leases.change <- struct{}{} // the last wake's pass has run
	if n, _ := failLines(); n != 2 {
		t.Errorf("%d passes flapping between failure and success logged %d lines of it at V(0), want 2 (the failure, its recovery)", be.passes.Load(), n)
	}
	be.down.Store(true)
	now.Add(int64(time.Minute))
	leases.change <- struct{}{}
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		if n, last := failLines(); n != 3 || !strings.Contains(last, `"flapsHeldBack"=`) {
			return errors.New("the failure still there a minute later is not logged again with the flaps held back")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}

// TestReconcileFailureLoggedBeforeStatus: a failed pass is logged before
// /status's lastResyncError shows it, and the pass that succeeds again
// before the error goes: whoever reads agentctl status, then the log, finds
// the line. The pass was recorded for /status first.
func TestReconcileFailureLoggedBeforeStatus(t *testing.T) {
	logs := &logLines{}
	h, _ := testHealth(t)
	a := &agent{cfg: Config{ResyncInterval: time.Hour}, log: funcr.New(logs.add, funcr.Options{}), health: h, obs: newObserver(), iptDone: true}
	be := &flapBackend{}
	be.down.Store(true)
	leases := newFakeLeases(lease("10.244.1.0/24", "198.18.0.1"))
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, stop := startReconcileLoop(t, a, be, leases, netCfg)
	defer stop()
	shows := func(failing bool) func() error {
		return func() error {
			if e := a.obs.status(a.health).LastResyncError; (e != "") != failing {
				return fmt.Errorf("lastResyncError %q", e)
			}
			return nil
		}
	}
	if err := cluster.Eventually(ctx, 10*time.Second, shows(true)); err != nil {
		t.Fatal(err)
	}
	if logs.count("reconcile failed") == 0 {
		t.Errorf("/status shows the failed pass, and no line says it failed: %q", logs.get())
	}
	be.down.Store(false)
	if err := cluster.Eventually(ctx, 10*time.Second, shows(false)); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("reconcile succeeded again"); n != 1 {
		t.Errorf("/status shows no failure, and %d lines say the passes succeed again, want 1: %q", n, logs.get())
	}
}
