package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

// refusingWriter fails every kernel change, as the kernel does for every
// host-gw route while the external interface is down.
type refusingWriter struct{}

func (refusingWriter) SetRoute(backend.Route) error { return syscall.ENETUNREACH }
func (refusingWriter) DelRoute(backend.Route) error { return syscall.ENETUNREACH }
func (refusingWriter) SetNeigh(backend.Neigh) error { return syscall.ENETUNREACH }
func (refusingWriter) DelNeigh(backend.Neigh) error { return syscall.ENETUNREACH }
func (refusingWriter) SetFDB(backend.FDB) error     { return syscall.ENETUNREACH }
func (refusingWriter) DelFDB(backend.FDB) error     { return syscall.ENETUNREACH }

var _ backend.Writer = refusingWriter{}

// TestStatusResyncErrorBounded: a pass where every one of 5000 peers' routes
// fails joins 5000 errors; /status lastResyncError names the first few and
// how many more there are, instead of carrying all of them in every answer.
func TestStatusResyncErrorBounded(t *testing.T) {
	const n = 5000
	var (
		plan  backend.Plan
		peers []subnet.Lease
	)
	for i := range n {
		sn := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24)
		gw := netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})
		plan.Routes.Add = append(plan.Routes.Add, backend.Route{Dst: sn, Gw: gw, LinkIndex: 2})
		peers = append(peers, lease(sn.String(), gw.String()))
	}
	res, err := plan.Apply(refusingWriter{}, logr.Discard())
	if err == nil {
		t.Fatal("Apply with a refusing writer: no error")
	}
	o := newObserver()
	h := newHealth(logr.Discard())
	mux := http.NewServeMux()
	o.register(mux, h)
	o.reconciled(lease("10.255.255.0/24", "198.19.0.1"), peers, res, err, time.Millisecond)

	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("decode /status: %v", err)
	}
	first := strings.SplitN(err.Error(), "\n", 2)[0]
	if !strings.HasPrefix(st.LastResyncError, first+"\n") {
		t.Errorf("lastResyncError does not start with the first failure %q: %.200q", first, st.LastResyncError)
	}
	more := fmt.Sprintf("(and %d more)", n-resyncErrorLines)
	if !strings.HasSuffix(st.LastResyncError, more) {
		t.Errorf("lastResyncError does not end with %q: …%q", more, st.LastResyncError[max(0, len(st.LastResyncError)-100):])
	}
	if rec.Body.Len() > 8<<10 {
		t.Errorf("/status with %d failed routes: %d bytes, want at most 8 KiB", n, rec.Body.Len())
	}
}

// refusedBackend's every pass fails the routes of 50 peers, as the kernel
// does while the external interface is down.
type refusedBackend struct{ fakeBackend }

func (b *refusedBackend) Reconcile(ctx context.Context, _ subnet.Lease, _ []subnet.Lease) (backend.Result, error) {
	b.passes.Add(1)
	var plan backend.Plan
	for i := range 50 {
		plan.Routes.Add = append(plan.Routes.Add, backend.Route{
			Dst: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(2 + i), 0}), 24),
			Gw:  netip.AddrFrom4([4]byte{198, 18, 0, byte(2 + i)}), LinkIndex: 2,
		})
	}
	return plan.Apply(refusingWriter{}, logr.Discard())
}

// TestStatusResyncErrorNamesIPTables: a pass where the backend's kernel
// changes fail and the iptables rules cannot be written either keeps the
// iptables failure in /status lastResyncError, not only the first of the
// per-change ones.
func TestStatusResyncErrorNamesIPTables(t *testing.T) {
	inOwnNetns(t, statusResyncErrorNamesIPTablesChild)
}

func statusResyncErrorNamesIPTablesChild(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no iptables
	a := &agent{
		cfg:    Config{IPMasq: true, IPTablesForwardRules: true, ResyncInterval: 50 * time.Millisecond},
		log:    logr.Discard(),
		health: newHealth(logr.Discard()),
		obs:    newObserver(),
	}
	a.health.setLeaseHeld(true, "")
	a.health.setSubnetEnvWritten()
	be := &refusedBackend{}
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.reconcileLoop(ctx, be, newFakeLeases(lease("10.244.1.0/24", "198.18.0.1")), netCfg, nil, func() error { return nil })
	}()
	defer func() { cancel(); <-done }()

	for deadline := time.Now().Add(20 * time.Second); be.passes.Load() < 3; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d reconcile passes in 20 s, want 3", be.passes.Load())
		}
	}
	st := a.obs.status(a.health)
	if !strings.Contains(st.LastResyncError, "iptables") {
		t.Errorf("lastResyncError does not name the missing iptables: %q", st.LastResyncError)
	}
	if !strings.Contains(st.LastResyncError, syscall.ENETUNREACH.Error()) {
		t.Errorf("lastResyncError does not name the failed routes: %q", st.LastResyncError)
	}
}
