package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
	"k8s.io/klog/v2"
)

// stepClock is a health clock the test moves; the agent's goroutines read
// it.
type stepClock struct{ t atomic.Int64 }

func newStepClock() *stepClock {
	c := &stepClock{}
	c.t.Store(time.Date(2026, 12, 6, 15, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *stepClock) now() time.Time            { return time.Unix(0, c.t.Load()) }
func (c *stepClock) add(d time.Duration)       { c.t.Add(int64(d)) }
func (c *stepClock) nowFunc() func() time.Time { return c.now }

// fakeNotifySocket listens where NOTIFY_SOCKET points, as systemd does for
// a Type=notify unit.
func fakeNotifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	return conn
}

// notifications reads the messages sent to conn until none comes for
// 100 ms (what was sent is in the socket's queue already: sends are
// synchronous).
func notifications(t *testing.T, conn *net.UnixConn) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 4096)
	for {
		if err := conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			return got
		}
		got = append(got, string(buf[:n]))
	}
}

// TestStartStepHangFailsHealthz: a backend preparation that never returns
// (iptables waiting for ever on an xtables lock) is a hung start. Before
// 2026-12-06 /healthz watched only the reconcile loop, which starts once the
// lease is held, and answered 200 for ever: kubelet never restarted the
// pod. Now /healthz fails once the step has run for longer than the
// reconcile loop's limit, naming it; systemd hears EXTEND_TIMEOUT_USEC with
// that limit when the step begins, and nothing once it is over.
func TestStartStepHangFailsHealthz(t *testing.T) {
	notify := fakeNotifySocket(t)
	clock := newStepClock()
	log := testr.New(t)
	h := newHealth(log)
	h.now = clock.nowFunc()
	be := &preparingBackend{entered: make(chan struct{})}
	a := &agent{
		cfg:      Config{ResyncInterval: 30 * time.Second},
		log:      log,
		backends: backend.Registry{"fake": func(backend.Config) (backend.Backend, error) { return be, nil }},
		health:   h,
		obs:      newObserver(),
	}
	netCfg, err := subnet.ParseConfig([]byte(`{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`))
	if err != nil {
		t.Fatal(err)
	}
	mux := h.handler()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = h.startSteps(ctx, livenessLimit(a.cfg.ResyncInterval))
	notifications(t, notify) // startSteps says nothing; drain anyway

	done := make(chan error, 1)
	go func() {
		_, _, err := a.startBackend(ctx, netCfg, backend.ExternalInterface{})
		done <- err
	}()
	select {
	case <-be.entered:
	case err := <-done:
		t.Fatalf("startBackend returned before Prepare: %v", err)
	}

	if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz as Prepare begins: %d %q, want 200", code, body)
	}
	clock.add(2*time.Minute + 30*time.Second)
	if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz at the limit (2m30s): %d %q, want 200", code, body)
	}
	clock.add(time.Second)
	want := "not ok: start-up step \"prepare fake backend\" has not returned for 2m31s (limit 2m30s)\n"
	if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusServiceUnavailable || body != want {
		t.Errorf("/healthz past the limit: %d %q, want 503 %q", code, body, want)
	}
	if got, want := notifications(t, notify), []string{"EXTEND_TIMEOUT_USEC=150000000"}; !slices.Equal(got, want) {
		t.Errorf("systemd heard %q, want %q", got, want)
	}

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("startBackend = %v, want the Prepare's context.Canceled", err)
	}
	if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz once Prepare returned: %d %q, want 200", code, body)
	}
}

// TestStartWaitForEtcdStaysAlive: waiting for etcd is no hang. Each attempt
// of retry is a step of its own, so an outage longer than the limit keeps
// /healthz at 200 (kubelet must not restart the agent in a loop for it)
// while /readyz says why it waits; and each attempt tells systemd
// EXTEND_TIMEOUT_USEC, so the unit's TimeoutStartSec= does not stop the
// wait either (before 2026-12-06 it did, every ~185 s). An attempt that
// itself does not return within the limit fails /healthz, naming it.
func TestStartWaitForEtcdStaysAlive(t *testing.T) {
	notify := fakeNotifySocket(t)
	clock := newStepClock()
	log := testr.New(t)
	h := newHealth(log)
	h.now = clock.nowFunc()
	mux := h.handler()
	ctx := h.startSteps(context.Background(), livenessLimit(30*time.Second))
	a := &agent{log: log, health: h}

	attempts := 0
	_, err := retry(ctx, log, explained{}, "connect to etcd", a.waitingForLease, nil, func(context.Context) (struct{}, error) {
		attempts++
		if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz at attempt %d, %s into the wait: %d %q, want 200", attempts, time.Duration(attempts-1)*2*time.Minute, code, body)
		}
		if attempts > 1 {
			want := "not ok: no lease acquired yet: cannot connect to etcd: etcd did not answer within 10s; subnet.env not written yet; peers not programmed yet\n"
			if code, body := probe(t, mux, "GET", "/readyz"); code != http.StatusServiceUnavailable || body != want {
				t.Errorf("/readyz at attempt %d: %d %q, want 503 %q", attempts, code, body, want)
			}
		}
		if attempts == 3 {
			return struct{}{}, nil
		}
		// The outage goes on: 2 min pass before the next attempt.
		clock.add(2 * time.Minute)
		return struct{}{}, errors.New("etcd did not answer within 10s")
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"EXTEND_TIMEOUT_USEC=150000000",
		"STATUS=not ready: no lease acquired yet: cannot connect to etcd: etcd did not answer within 10s; subnet.env not written yet; peers not programmed yet",
		"EXTEND_TIMEOUT_USEC=150000000",
		"EXTEND_TIMEOUT_USEC=150000000",
		"STATUS=not ready: no lease acquired yet; subnet.env not written yet; peers not programmed yet",
	}
	if got := notifications(t, notify); !slices.Equal(got, want) {
		t.Errorf("systemd heard\n%q\nwant\n%q", got, want)
	}

	t.Run("attempt hangs", func(t *testing.T) {
		_, err := retry(ctx, log, explained{}, "read the network config", a.waitingForLease, nil, func(context.Context) (struct{}, error) {
			clock.add(3 * time.Minute)
			want := "not ok: start-up step \"read the network config\" has not returned for 3m0s (limit 2m30s)\n"
			if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusServiceUnavailable || body != want {
				t.Errorf("/healthz, an attempt 3 min old: %d %q, want 503 %q", code, body, want)
			}
			return struct{}{}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if code, body := probe(t, mux, "GET", "/healthz"); code != http.StatusOK {
			t.Errorf("/healthz once the attempt returned: %d %q, want 200", code, body)
		}
	})
}

// TestExtendOnlyWhileStarting: EXTEND_TIMEOUT_USEC is about the start.
// After READY=1 systemd would apply it to RuntimeMaxSec=, after STOPPING=1
// to the stop's timeout.
func TestExtendOnlyWhileStarting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(h *health)
	}{
		{"ready", func(h *health) {
			h.setLeaseHeld(true, "")
			h.setSubnetEnvWritten()
			h.setPeersProgrammed()
		}},
		{"stopping", func(h *health) { h.stopping() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHealth(testr.New(t))
			var sent []string
			h.notify = func(state string) (bool, error) { sent = append(sent, state); return true, nil }
			h.startSteps(context.Background(), time.Minute)
			tc.after(h)
			n := len(sent)
			h.startStep("load the host ID")()
			if len(sent) != n {
				t.Errorf("sent %q after %s, want nothing", sent[n:], tc.name)
			}
		})
	}
}

// startHangEnv, when set, makes TestStartHangRun the child; it names the
// etcd endpoint.
const startHangEnv = "AGENTD_START_HANG_TEST_ETCD"

// TestStartHangRun is TestStartStepHangFailsHealthz through the whole
// start as run makes it, in a host of its own with a real etcd: the
// interface chosen, etcd connected, the config read, then a backend whose
// Prepare never returns. The health server's /healthz answers 200 until the
// step has run for the limit of --resync-interval 1s (1m3s), then 503
// naming it; under systemd each step and attempt said EXTEND_TIMEOUT_USEC
// with that limit.
func TestStartHangRun(t *testing.T) {
	if ep := os.Getenv(startHangEnv); ep != "" {
		startHangChild(t, ep)
		return
	}
	cluster.RunTestInHost(t, "TestStartHangRun", startHangEnv, map[string]string{
		"/fake/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	})
}

func startHangChild(t *testing.T, etcd string) {
	notify := fakeNotifySocket(t)
	clock := newStepClock()
	log := testr.New(t)
	be := &preparingBackend{entered: make(chan struct{})}
	h := newHealth(log)
	h.now = clock.nowFunc()
	a := &agent{
		cfg:      hostConfig(t, etcd, "/fake"),
		log:      log,
		backends: backend.Registry{"fake": func(backend.Config) (backend.Backend, error) { return be, nil }},
		health:   h,
		obs:      newObserver(),
	}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), log))
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- a.run(ctx) }()
	select {
	case <-be.entered:
	case err := <-errc:
		t.Fatalf("run returned before the backend prepared: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the backend's Prepare was not called within 30 s")
	}

	healthz := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + a.cfg.HealthzAddr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(body)
	}
	if code, body := healthz(); code != http.StatusOK {
		t.Errorf("/healthz as Prepare begins: %d %q, want 200", code, body)
	}
	clock.add(livenessLimit(a.cfg.ResyncInterval) + 5*time.Second)
	want := "not ok: start-up step \"prepare fake backend\" has not returned for 1m8s (limit 1m3s)\n"
	if code, body := healthz(); code != http.StatusServiceUnavailable || body != want {
		t.Errorf("/healthz past the limit: %d %q, want 503 %q", code, body, want)
	}
	// The interface, each attempt to connect to etcd and to read the
	// config (one each with etcd up), the backend.
	var extends []string
	for _, m := range notifications(t, notify) {
		if strings.HasPrefix(m, "EXTEND_TIMEOUT_USEC=") {
			extends = append(extends, m)
		}
	}
	if len(extends) < 4 || slices.ContainsFunc(extends, func(m string) bool { return m != "EXTEND_TIMEOUT_USEC=63000000" }) {
		t.Errorf("systemd heard %q, want EXTEND_TIMEOUT_USEC=63000000 4 times or more", extends)
	}

	cancel()
	select {
	case err := <-errc:
		if err != nil {
			t.Errorf("run stopped during Prepare = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return within 30 s of its context's end")
	}
}

// TestHeartbeatExtendsStart: once the lease is held, the agent may still
// wait for etcd before READY=1 (the first peer list, etcd gone right after
// the lease), with the reconcile loop turning. Each heartbeat until READY=1
// extends the start by the loop's limit, so TimeoutStartSec= no longer
// stops that wait either; a loop that stops turning stops the extensions,
// and systemd's timeout ends it. After READY=1 the heartbeat sends nothing.
func TestHeartbeatExtendsStart(t *testing.T) {
	h := newHealth(testr.New(t))
	var sent []string
	h.notify = func(state string) (bool, error) { sent = append(sent, state); return true, nil }
	h.setLeaseHeld(true, "")
	sent = nil
	h.expectHeartbeat(livenessLimit(30 * time.Second))
	h.heartbeat()
	h.heartbeat()
	want := []string{"EXTEND_TIMEOUT_USEC=150000000", "EXTEND_TIMEOUT_USEC=150000000", "EXTEND_TIMEOUT_USEC=150000000"}
	if !slices.Equal(sent, want) {
		t.Errorf("before READY=1 sent %q, want %q", sent, want)
	}
	h.setSubnetEnvWritten()
	h.setPeersProgrammed()
	sent = nil
	h.heartbeat()
	if len(sent) != 0 {
		t.Errorf("a heartbeat after READY=1 sent %q, want nothing", sent)
	}
}
