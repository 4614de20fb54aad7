package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
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
// reconcile loop's limit, naming it. systemd hears nothing of the step: the
// unit's TimeoutStartSec= bounds the start (startup.go).
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
	if got := notifications(t, notify); len(got) != 0 {
		t.Errorf("systemd heard %q, want nothing", got)
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
// while /readyz says why it waits. systemd hears only the status: the
// start is not extended, so the unit's TimeoutStartSec= still ends a long
// wait (startup.go). An attempt that itself does not return within the
// limit fails /healthz, naming it.
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
		"STATUS=not ready: no lease acquired yet: cannot connect to etcd: etcd did not answer within 10s; subnet.env not written yet; peers not programmed yet",
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

// TestStartHangRun is TestStartStepHangFailsHealthz through the whole
// start as run makes it, in a host of its own with a real etcd: the
// interface chosen, etcd connected, the config read, then a backend whose
// Prepare never returns. The health server's /healthz answers 200 until the
// step has run for the limit of --resync-interval 1s (1m3s), then 503
// naming it; systemd hears no EXTEND_TIMEOUT_USEC.
func TestStartHangRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/fake/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, startHangChild)
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
	// The status lines only: the start stays bounded by TimeoutStartSec=.
	for _, m := range notifications(t, notify) {
		if !strings.HasPrefix(m, "STATUS=") {
			t.Errorf("systemd heard %q, want STATUS= lines only", m)
		}
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
