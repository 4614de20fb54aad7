package agent

import (
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
