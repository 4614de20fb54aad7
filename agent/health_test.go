package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// nsHealthServer is a health server for h on 127.0.0.1 of a network
// namespace of its own, not yet serving: the server, the namespace and the
// address it listens on.
func nsHealthServer(t *testing.T, h *health) (*healthServer, string, string) {
	t.Helper()
	ns := etcdtest.NewNetns(t)
	srv, err := etcdtest.InNetns(ns, func() (*healthServer, error) { return listenHealth("127.0.0.1:0", h) })
	if err != nil {
		t.Fatal(err)
	}
	return srv, ns, srv.ln.Addr().String()
}

// testHealth is a health whose READY=1 notifications are counted.
func testHealth(t *testing.T) (*health, *atomic.Int32) {
	t.Helper()
	h := newHealth(logr.Discard())
	var n atomic.Int32
	h.notify = func(state string) (bool, error) {
		if slices.Contains(strings.Split(state, "\n"), "READY=1") {
			n.Add(1)
		}
		return true, nil
	}
	return h, &n
}

// probe asks the handler and returns the status and body.
func probe(t *testing.T, handler http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec.Code, rec.Body.String()
}

func TestReadiness(t *testing.T) {
	h, notified := testHealth(t)
	mux := h.handler()

	check := func(step string, wantCode int, wantBody string, wantNotified int32) {
		t.Helper()
		code, body := probe(t, mux, "GET", "/readyz")
		if code != wantCode || body != wantBody {
			t.Errorf("%s: /readyz = %d %q, want %d %q", step, code, body, wantCode, wantBody)
		}
		if got := notified.Load(); got != wantNotified {
			t.Errorf("%s: systemd notified %d times, want %d", step, got, wantNotified)
		}
		if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK || body != "ok\n" {
			t.Errorf("%s: /healthz = %d %q, want 200 ok", step, code, body)
		}
	}

	check("start", 503, "not ok: no lease acquired yet; subnet.env not written yet; peers not programmed yet\n", 0)
	h.setLeaseHeld(true, "")
	check("lease", 503, "not ok: subnet.env not written yet; peers not programmed yet\n", 0)
	h.setSubnetEnvFailed(errors.New("replace /run/flannel/subnet.env: open /run/flannel/.subnet.env.tmp1: read-only file system"))
	check("subnet.env failed", 503, "not ok: subnet.env not written: replace /run/flannel/subnet.env: open /run/flannel/.subnet.env.tmp1: read-only file system; peers not programmed yet\n", 0)
	h.setSubnetEnvWritten()
	check("subnet.env", 503, "not ok: peers not programmed yet\n", 0)
	h.setPeersProgrammed()
	check("peers", 200, "ok\n", 1)
	h.setLeaseHeld(false, "own lease deleted in etcd; recreating it")
	check("lease lost", 503, "not ok: own lease deleted in etcd; recreating it\n", 1)
	h.setLeaseHeld(false, "")
	check("lease lost without reason", 503, "not ok: lease not held\n", 1)
	h.setLeaseHeld(true, "")
	check("lease back", 200, "ok\n", 1)
	h.setPeersProgrammed()
	h.setSubnetEnvWritten()
	check("repeated calls", 200, "ok\n", 1)
}

// Readiness must not depend on the order the conditions arrive in.
func TestReadinessAnyOrder(t *testing.T) {
	setters := []func(h *health){
		func(h *health) { h.setLeaseHeld(true, "") },
		(*health).setSubnetEnvWritten,
		(*health).setPeersProgrammed,
	}
	for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}, {1, 0, 2}, {1, 2, 0}, {2, 0, 1}, {2, 1, 0}} {
		h, notified := testHealth(t)
		for i, s := range order {
			if ready, _ := h.ready(); ready {
				t.Errorf("order %v: ready after %d of 3 conditions", order, i)
			}
			setters[s](h)
		}
		if ready, why := h.ready(); !ready || notified.Load() != 1 {
			t.Errorf("order %v: ready=%v (%s), notified %d times", order, ready, why, notified.Load())
		}
	}
}

// NOTIFY_SOCKET naming a socket that is gone: the agent becomes ready all
// the same, tries READY=1 once, and logs the failure once.
func TestNotifyErrorIsNotFatal(t *testing.T) {
	var logged []string
	h := newHealth(funcr.New(func(_, args string) {
		if strings.Contains(args, "cannot notify systemd") {
			logged = append(logged, args)
		}
	}, funcr.Options{}))
	readies := 0
	h.notify = func(state string) (bool, error) {
		if strings.Contains(state, "READY=1") {
			readies++
		}
		return false, errors.New("dial unixgram /run/systemd/notify: connect: no such file or directory")
	}
	h.setLeaseHeld(true, "")
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	h.setLeaseHeld(false, "x")
	h.setLeaseHeld(true, "")
	h.stopping()
	if ready, _ := h.ready(); !ready || readies != 1 {
		t.Errorf("ready=%v after a failed notification, READY=1 tried %d times (want 1)", ready, readies)
	}
	if len(logged) != 1 {
		t.Errorf("the failure logged %d times, want once: %q", len(logged), logged)
	}
}

// The real sd_notify path: READY=1 arrives once on NOTIFY_SOCKET, with
// STATUS=ready, after a STATUS= for each reason it was not ready.
func TestSdNotifyReady(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)

	h := newHealth(klog.Background())
	h.setLeaseHeld(true, "")
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	h.setLeaseHeld(false, "lost")
	h.setLeaseHeld(true, "")

	want := []string{
		"STATUS=not ready: subnet.env not written yet; peers not programmed yet",
		"STATUS=not ready: peers not programmed yet",
		"READY=1\nSTATUS=ready",
		"STATUS=not ready: lost",
		"STATUS=ready",
	}
	buf := make([]byte, 256)
	for i, w := range want {
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		if got := string(buf[:n]); got != w {
			t.Errorf("notification %d %q, want %q", i, got, w)
		}
	}
	if err := conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if n, err := conn.Read(buf); err == nil {
		t.Errorf("one more notification %q, want none", buf[:n])
	}
}

// After STOPPING=1 no STATUS= follows: the shutdown's own changes (a lease
// manager that stops) must not make systemctl status say "not ready".
func TestNotifyStopping(t *testing.T) {
	h := newHealth(logr.Discard())
	var msgs []string
	h.notify = func(state string) (bool, error) { msgs = append(msgs, state); return true, nil }
	h.setLeaseHeld(true, "")
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	h.stopping()
	h.setLeaseHeld(false, "lease manager stopped")
	h.stopping()
	want := []string{
		"STATUS=not ready: subnet.env not written yet; peers not programmed yet",
		"STATUS=not ready: peers not programmed yet",
		"READY=1\nSTATUS=ready",
		"STOPPING=1\nSTATUS=stopping; the datapath and the lease stay in place",
	}
	if !slices.Equal(msgs, want) {
		t.Errorf("notifications %q, want %q", msgs, want)
	}
}

// With udp, what a stop leaves does not forward: the STOPPING=1 status must
// not say the datapath stays, as it does for the kernel's backends.
func TestNotifyStoppingSaysWhatStays(t *testing.T) {
	for typ, want := range map[string]string{
		"vxlan":   "STATUS=stopping; the datapath and the lease stay in place",
		"host-gw": "STATUS=stopping; the datapath and the lease stay in place",
		"udp":     "STATUS=stopping; the lease, flannel0 and its routes stay in place, but udp carries nothing until agentd runs again (the descriptor keeper queues what arrives meanwhile)",
	} {
		h := newHealth(logr.Discard())
		var last string
		h.notify = func(state string) (bool, error) { last = state; return true, nil }
		h.setBackend(typ)
		h.setLeaseHeld(true, "")
		h.stopping()
		if last != "STOPPING=1\n"+want {
			t.Errorf("backend %q: last notification %q, want STOPPING=1 and %q", typ, last, want)
		}
	}
}

// A stop before a lease was taken (etcd unreachable from the start, the
// network config absent, no free subnet) said "the datapath and the lease
// stay in place", and with udp that flannel0 and its routes did, when the
// agent held no lease and had set up nothing that needs one. A lease held
// once, then lost as the lease manager stops, still counts as taken.
func TestNotifyStoppingBeforeLease(t *testing.T) {
	const before = "STOPPING=1\nSTATUS=stopping; no lease was taken yet, so no routes were set up and subnet.env was not written"
	for _, tc := range []struct {
		name    string
		backend string // "": the network config was not read
		leased  bool
		want    string
	}{
		{"etcd unreachable or config absent", "", false, before},
		{"vxlan, no free subnet", "vxlan", false, before},
		{"udp, no free subnet", "udp", false, before},
		{"lease lost as the manager stops", "vxlan", true, "STOPPING=1\nSTATUS=stopping; the datapath and the lease stay in place"},
	} {
		h := newHealth(logr.Discard())
		var last string
		h.notify = func(state string) (bool, error) { last = state; return true, nil }
		if tc.backend != "" {
			h.setBackend(tc.backend)
		}
		h.setLeaseHeld(false, "no lease acquired yet: cannot read the network config: etcd unreachable")
		if tc.leased {
			h.setLeaseHeld(true, "")
			h.setLeaseHeld(false, "lease manager stopped")
		}
		h.stopping()
		if last != tc.want {
			t.Errorf("%s: last notification %q, want %q", tc.name, last, tc.want)
		}
	}
}

// Readiness changing in several goroutines at once: the STATUS= sent last
// is the readiness at the end, whatever order the changes took.
func TestNotifyStatusLastIsCurrent(t *testing.T) {
	for range 50 {
		h := newHealth(logr.Discard())
		var mu sync.Mutex
		last := ""
		h.notify = func(state string) (bool, error) {
			for _, l := range strings.Split(state, "\n") {
				if s, ok := strings.CutPrefix(l, "STATUS="); ok {
					mu.Lock()
					last = s
					mu.Unlock()
				}
			}
			return true, nil
		}
		var wg sync.WaitGroup
		for _, f := range []func(){
			func() { h.setLeaseHeld(true, "") },
			h.setSubnetEnvWritten,
			h.setPeersProgrammed,
			func() { h.setLeaseHeld(false, "lost"); h.setLeaseHeld(true, "") },
		} {
			wg.Go(f)
		}
		wg.Wait()
		if last != "ready" {
			t.Fatalf("last STATUS=%q, want ready", last)
		}
	}
}

// The watchdog is fed while the reconcile loop turns, not while it is
// wedged, and again once it turns again; each change is logged once.
func TestWatchdogFollowsLiveness(t *testing.T) {
	var logged []string
	h := newHealth(funcr.New(func(_, args string) { logged = append(logged, args) }, funcr.Options{}))
	now := time.Unix(1_000_000, 0)
	h.now = func() time.Time { return now }
	pings := 0
	h.notify = func(state string) (bool, error) {
		if state != "WATCHDOG=1" {
			t.Errorf("%q, want WATCHDOG=1", state)
		}
		pings++
		return true, nil
	}
	feed := func(step string, want int) {
		t.Helper()
		pings = 0
		h.feedWatchdog(30 * time.Second)
		h.feedWatchdog(30 * time.Second)
		if pings != want {
			t.Errorf("%s: %d WATCHDOG=1 of 2 feeds, want %d", step, pings, want)
		}
	}
	feed("starting", 2)
	h.expectHeartbeat(time.Minute)
	feed("loop turning", 2)
	now = now.Add(2 * time.Minute)
	feed("loop wedged for 2 min", 0)
	h.heartbeat()
	feed("loop turning again", 2)
	want := []string{
		`"msg"="not feeding systemd's watchdog: it will kill the agent" "error"=null "reason"="reconcile loop has not run for 2m0s (limit 1m0s)" "watchdogSec"="30s"`,
		`"level"=0 "msg"="feeding systemd's watchdog again"`,
	}
	if !slices.Equal(logged, want) {
		t.Errorf("logged %q, want %q", logged, want)
	}
}

func TestLivenessHeartbeat(t *testing.T) {
	h, _ := testHealth(t)
	now := time.Unix(1_000_000, 0)
	h.now = func() time.Time { return now }
	mux := h.handler()

	if code, _ := probe(t, mux, "GET", "/healthz"); code != 200 {
		t.Errorf("without heartbeat expected: /healthz %d, want 200", code)
	}
	h.expectHeartbeat(10 * time.Second)
	now = now.Add(10 * time.Second)
	if code, _ := probe(t, mux, "GET", "/healthz"); code != 200 {
		t.Errorf("at the limit: /healthz %d, want 200", code)
	}
	now = now.Add(time.Second)
	code, body := probe(t, mux, "GET", "/healthz")
	if want := "not ok: reconcile loop has not run for 11s (limit 10s)\n"; code != 503 || body != want {
		t.Errorf("stalled: /healthz %d %q, want 503 %q", code, body, want)
	}
	h.heartbeat()
	if code, _ := probe(t, mux, "GET", "/healthz"); code != 200 {
		t.Errorf("after a heartbeat: /healthz %d, want 200", code)
	}
}

// TestLivenessWhilePeersUnsynced: until the first full peer list arrives
// (etcd unreachable right after Acquire) the reconcile loop changes nothing
// but is alive, woken by its resync ticker: /healthz stays 200 however far
// the clock moves past the heartbeat limit, so kubelet does not restart an
// agent that is only waiting.
func TestLivenessWhilePeersUnsynced(t *testing.T) {
	h, _ := testHealth(t)
	var now atomic.Int64 // the loop's heartbeats read the clock
	now.Store(time.Unix(1_000_000, 0).UnixNano())
	h.now = func() time.Time { return time.Unix(0, now.Load()) }
	const limit = 10 * time.Second
	h.expectHeartbeat(limit)
	a := &agent{cfg: Config{ResyncInterval: time.Millisecond}, log: logr.Discard(), health: h, obs: newObserver()}
	be := &fakeBackend{}
	// Never synced.
	leases := &fakeLeases{own: lease("10.244.1.0/24", "198.18.0.1"), synced: make(chan struct{}), change: make(chan struct{})}
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, stop := startReconcileLoop(t, a, be, leases, netCfg)
	defer stop()

	mux := h.handler()
	for i := range 3 {
		now.Add(int64(limit + time.Second))
		err := cluster.Eventually(ctx, 10*time.Second, func() error {
			if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
				return fmt.Errorf("/healthz = %d %q", code, body)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("clock moved %s (heartbeat limit %s), waiting for the first peer list: %v", time.Duration(i+1)*(limit+time.Second), limit, err)
		}
	}
	if n := be.passes.Load(); n != 0 {
		t.Errorf("%d reconcile passes before the first peer list, want none", n)
	}
}

func TestProbeMethodsAndHeaders(t *testing.T) {
	h, _ := testHealth(t)
	mux := h.handler()
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("HEAD", "/healthz", nil))
	if rec.Code != 200 {
		t.Errorf("HEAD /healthz = %d, want 200", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
	if code, _ := probe(t, mux, "POST", "/readyz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d, want 405", code)
	}
	if code, _ := probe(t, mux, "GET", "/"); code != http.StatusNotFound {
		t.Errorf("GET / = %d, want 404", code)
	}
}

// Readers and writers at once, for the race detector.
func TestHealthConcurrent(t *testing.T) {
	h, notified := testHealth(t)
	mux := h.handler()
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 200 {
				switch (i + j) % 5 {
				case 0:
					h.setLeaseHeld(j%2 == 0, "flapping")
				case 1:
					h.setSubnetEnvWritten()
				case 2:
					h.setPeersProgrammed()
				case 3:
					h.heartbeat()
				default:
					probe(t, mux, "GET", "/readyz")
				}
			}
		})
	}
	wg.Wait()
	h.setLeaseHeld(true, "")
	if ready, why := h.ready(); !ready || notified.Load() != 1 {
		t.Errorf("ready=%v (%s), notified %d times, want once", ready, why, notified.Load())
	}
}

func TestHealthServer(t *testing.T) {
	h, _ := testHealth(t)
	// The server and its clients live in a namespace of the test's own.
	ns := etcdtest.NewNetns(t)
	listen := func(addr string) (*healthServer, error) {
		return etcdtest.InNetns(ns, func() (*healthServer, error) { return listenHealth(addr, h) })
	}
	dial := etcdtest.NetnsDialer(ns)
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
	}}
	srv, err := listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := srv.ln.Addr().String()
	// The mux takes more handlers, as /metrics will be.
	srv.mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "# metrics") })

	// A second server on the same address fails at start-up, naming why.
	if _, err := listen(addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) || !strings.HasPrefix(err.Error(), "health server: ") {
		t.Errorf("second listen on %s: %v, want 'health server: ... address already in use'", addr, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx) }()

	get := func(path string) (int, string, error) {
		resp, err := client.Get("http://" + addr + path)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 503, "/metrics": 200} {
		if code, body, err := get(path); err != nil || code != want {
			t.Errorf("GET %s = %d %q %v, want %d", path, code, body, err, want)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("serve after cancel: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
	if _, _, err := get("/healthz"); err == nil {
		t.Error("server still answers after shutdown")
	}
}

// TestHealthServerStopWithRequestsInFlight: the stop of the health server
// waits a short grace for requests in flight, then cuts those still
// there, so that a client holding one (it sends its request slowly, as a
// scraper stalled half-way does, or one that connected and sent nothing
// yet) does not hold the agent's exit; an answer
// being made when the stop comes (the last /readyz kubelet asks) still
// goes out. Before, the stop waited for the stalled request up to 5 s.
func TestHealthServerStopWithRequestsInFlight(t *testing.T) {
	h, _ := testHealth(t)
	srv, ns, addr := nsHealthServer(t, h)
	entered, release := make(chan struct{}), make(chan struct{})
	srv.mux.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
		close(entered)
		<-release
		fmt.Fprintln(w, "ok")
	})
	var conns atomic.Int32
	srv.srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.serve(ctx) }()

	dial := etcdtest.NetnsDialer(ns)
	stalled, err := dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if _, err := io.WriteString(stalled, "GET /metrics HTTP/1.1\r\nHost: agentd\r\n"); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
	}}
	answer := make(chan string, 1)
	go func() {
		resp, err := client.Get("http://" + addr + "/slow")
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		answer <- fmt.Sprintf("%d %s %v", resp.StatusCode, strings.TrimSpace(string(b)), err)
	}()
	<-entered
	// The server has taken the stalled connection too.
	for deadline := time.Now().Add(10 * time.Second); conns.Load() < 2; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the server took %d connections in 10 s, want 2", conns.Load())
		}
	}

	cancel()
	stopped := time.Now()
	// The answer being made goes out once the stop has begun.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c, err := dial(context.Background(), addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the server still takes connections 10 s after its stop")
		}
	}
	close(release)
	if got := <-answer; got != "200 ok <nil>" {
		t.Errorf("the request in flight at the stop got %q, want its answer 200 ok", got)
	}
	const limit = 500 * time.Millisecond
	select {
	case err = <-done:
	case <-time.After(limit):
		err = <-done
		t.Errorf("serve returned %s after the stop, want within %s, with a client holding a request",
			time.Since(stopped).Round(time.Millisecond), limit)
	}
	t.Logf("serve returned %s after the stop", time.Since(stopped).Round(time.Millisecond))
	if err != nil {
		t.Errorf("serve after a stop with a request held = %v, want nil", err)
	}
}

// While the health server's address cannot be bound, STATUS= says so,
// since /status cannot be asked; once bound, it says the readiness alone.
func TestSdNotifyHealthUnbound(t *testing.T) {
	h := newHealth(klog.Background())
	var msgs []string
	h.notify = func(state string) (bool, error) { msgs = append(msgs, state); return true, nil }
	h.setHealthUnbound("198.18.0.1:8471")
	h.setLeaseHeld(true, "")
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	h.setHealthUnbound("")
	const note = "; health server not listening on 198.18.0.1:8471 (another program holds the port, or the IP is not on this host): binding it again"
	want := []string{
		"STATUS=not ready: no lease acquired yet; subnet.env not written yet; peers not programmed yet" + note,
		"STATUS=not ready: subnet.env not written yet; peers not programmed yet" + note,
		"STATUS=not ready: peers not programmed yet" + note,
		"READY=1\nSTATUS=ready" + note,
		"STATUS=ready",
	}
	if !slices.Equal(msgs, want) {
		t.Errorf("notifications:\n%q\nwant\n%q", msgs, want)
	}
}
