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

// driftBackend finds one route missing on every pass and puts it back, as
// when another program deletes it again and again.
type driftBackend struct{ fakeBackend }

func (b *driftBackend) Reconcile(ctx context.Context, _ subnet.Lease, _ []subnet.Lease) (backend.Result, error) {
	b.passes.Add(1)
	res := backend.Result{Added: 1}
	res.Count("route", 1)
	return res, ctx.Err()
}

// TestKernelChangesLoggedOncePerMinute: a hundred passes that each change
// the kernel (churn, or a route deleted by something else each time) log
// one line at the default verbosity, not one a pass; a minute later the
// next pass logs the sum of the ones held back.
func TestKernelChangesLoggedOncePerMinute(t *testing.T) {
	var (
		mu    sync.Mutex
		lines []string
	)
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{Verbosity: 0})
	logged := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), lines...)
	}
	var now atomic.Int64
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	h, _ := testHealth(t)
	a := &agent{cfg: Config{ResyncInterval: time.Hour}, log: log, health: h, obs: newObserver(), iptDone: true}
	a.changes.now = func() time.Time { return time.Unix(0, now.Load()) }
	be := &driftBackend{}
	leases := newFakeLeases(lease("10.244.1.0/24", "198.18.0.1"))
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, stop := startReconcileLoop(t, a, be, leases, netCfg)
	defer stop()
	// A wake the loop takes before the closed synced channel makes no
	// pass (select picks at random among ready cases), so the wakes start
	// after the first pass, which follows the synced channel's at once.
	if err := cluster.Eventually(ctx, 10*time.Second, func() error {
		if be.passes.Load() == 0 {
			return errors.New("no pass yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	const wakes = 100
	for range wakes {
		leases.change <- struct{}{}
	}
	// The last wake's pass has run once the loop takes another.
	leases.change <- struct{}{}
	reconciled := func(ls []string) (n int, last string) {
		for _, l := range ls {
			if strings.Contains(l, `"kernel state reconciled"`) {
				n, last = n+1, l
			}
		}
		return n, last
	}
	got := logged()
	if n, _ := reconciled(got); n != 1 || len(got) != 2 {
		t.Fatalf("%d passes changing the kernel within a minute logged %d lines (%d of kernel changes) at V(0), want 2 (the first snapshot, its changes):\n%s",
			be.passes.Load(), len(got), n, strings.Join(got, "\n"))
	}
	now.Add(int64(time.Minute))
	leases.change <- struct{}{}
	var last string
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		var n int
		if n, last = reconciled(logged()); n != 2 {
			return fmt.Errorf("%d lines of kernel changes, want 2", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var passes int
	_, sum, _ := strings.Cut(last, `"passes"=`)
	if _, err := fmt.Sscanf(sum, "%d", &passes); err != nil || passes < wakes {
		t.Errorf("the minute's line does not sum the %d passes held back: %s", wakes, last)
	}
}

// startReconcileLoop runs a's reconcile loop in the background and returns
// its context and stop, which cancels it, waits for it and fails the test
// if it returned an error.
func startReconcileLoop(t *testing.T, a *agent, be backend.Backend, leases leaseSource, netCfg *subnet.Config) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.reconcileLoop(ctx, be, leases, netCfg, nil, func() error { return nil }) }()
	return ctx, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("reconcileLoop after cancel: %v", err)
		}
	}
}
