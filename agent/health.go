package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/go-logr/logr"
)

// health is the agent's liveness and readiness, read by /healthz and /readyz
// and reported to systemd.
//
// Ready means all three of (shared/DESIGN.md §4.6):
//
//	own lease held ─────────────────┐
//	subnet.env written ─────────────┼──> ready ──(first time only)──> sd_notify READY=1
//	first peer snapshot programmed ─┘
//
// subnet.env and the peer snapshot, once done, stay done; the lease can be
// lost and regained, and readiness follows it. systemd is told only once: its
// READY=1 means "start-up finished", not "healthy now".
//
// Liveness is "the process answers", and, once expectHeartbeat was called,
// also "the reconcile loop ticked within its limit", so that a wedged loop
// gets the process restarted.
//
// All methods are safe for concurrent use and never block on I/O other than
// the one sd_notify datagram.
type health struct {
	log logr.Logger
	// notifyReady tells the service manager that start-up is done; it is
	// sdNotifyReady except in tests.
	notifyReady func() (sent bool, err error)
	now         func() time.Time

	mu              sync.Mutex
	leaseHeld       bool
	leaseReason     string // why the lease is not held, when it is not
	envWritten      bool
	envReason       string // why subnet.env is not written, once a write failed
	peersProgrammed bool
	wasReady        bool // the last readiness logged, to log changes only
	notified        bool
	maxBeatAge      time.Duration // 0: no heartbeat expected
	lastBeat        time.Time
}

func newHealth(log logr.Logger) *health {
	return &health{
		log:         log,
		notifyReady: sdNotifyReady,
		now:         time.Now,
		leaseReason: "no lease acquired yet",
	}
}

func sdNotifyReady() (bool, error) { return daemon.SdNotify(false, daemon.SdNotifyReady) }

// setLeaseHeld records whether our own lease is held; reason says why not.
// Its signature is subnet.ManagerConfig.OnLeaseState's.
func (h *health) setLeaseHeld(held bool, reason string) {
	h.mu.Lock()
	h.leaseHeld = held
	h.leaseReason = reason
	if !held && reason == "" {
		h.leaseReason = "lease not held"
	}
	h.changedLocked()
}

// setSubnetEnvWritten records that subnet.env names our current subnet.
func (h *health) setSubnetEnvWritten() {
	h.mu.Lock()
	h.envWritten = true
	h.changedLocked()
}

// setSubnetEnvFailed records why subnet.env could not be written, for
// /readyz until setSubnetEnvWritten.
func (h *health) setSubnetEnvFailed(err error) {
	h.mu.Lock()
	h.envReason = "subnet.env not written: " + err.Error()
	h.changedLocked()
}

// setPeersProgrammed records that the first full peer set is in the kernel.
func (h *health) setPeersProgrammed() {
	h.mu.Lock()
	h.peersProgrammed = true
	h.changedLocked()
}

// expectHeartbeat makes /healthz fail once heartbeat has not been called for
// longer than maxAge. The clock starts now.
func (h *health) expectHeartbeat(maxAge time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.maxBeatAge = maxAge
	h.lastBeat = h.now()
}

// heartbeat tells the health state that the loop it watches is turning.
func (h *health) heartbeat() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lastBeat = h.now()
}

// changedLocked logs readiness changes and sends READY=1 the first time the
// agent becomes ready. It is called with h.mu held and releases it, so that
// the notification is sent outside the lock.
func (h *health) changedLocked() {
	ready, reason := h.readyLocked()
	changed := ready != h.wasReady
	h.wasReady = ready
	notify := ready && !h.notified
	if notify {
		h.notified = true
	}
	h.mu.Unlock()

	if changed {
		if ready {
			h.log.Info("ready")
		} else {
			h.log.Info("not ready", "reason", reason)
		}
	}
	if !notify {
		return
	}
	switch sent, err := h.notifyReady(); {
	case err != nil:
		h.log.Error(err, "cannot tell systemd that start-up finished")
	case sent:
		h.log.V(2).Info("told systemd that start-up finished")
	default:
		h.log.V(2).Info("not started by systemd with Type=notify; no readiness notification sent")
	}
}

// ready reports whether the agent is ready and, if not, every reason why not.
func (h *health) ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.readyLocked()
}

func (h *health) readyLocked() (bool, string) {
	var why []string
	if !h.leaseHeld {
		why = append(why, h.leaseReason)
	}
	switch {
	case h.envWritten:
	case h.envReason != "":
		why = append(why, h.envReason)
	default:
		why = append(why, "subnet.env not written yet")
	}
	if !h.peersProgrammed {
		why = append(why, "peers not programmed yet")
	}
	return len(why) == 0, strings.Join(why, "; ")
}

// alive reports whether the watched loop (if any) is turning.
func (h *health) alive() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.maxBeatAge <= 0 {
		return true, ""
	}
	if age := h.now().Sub(h.lastBeat); age > h.maxBeatAge {
		return false, fmt.Sprintf("reconcile loop has not run for %s (limit %s)", age.Round(time.Second), h.maxBeatAge)
	}
	return true, ""
}

// handler serves the probes on a mux that more handlers (/metrics) can be
// added to.
func (h *health) handler() *http.ServeMux {
	mux := http.NewServeMux()
	// GET patterns also match HEAD; anything else gets 405.
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		probeReply(w, h.alive)
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		probeReply(w, h.ready)
	})
	return mux
}

func probeReply(w http.ResponseWriter, check func() (bool, string)) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, reason := check()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ok: %s\n", reason)
		return
	}
	fmt.Fprintln(w, "ok")
}

// healthServer is the HTTP server of the probes. listenHealth binds it, so an
// address in use fails start-up; serve runs it.
type healthServer struct {
	// mux routes the requests; add handlers (e.g. /metrics) before serve.
	mux *http.ServeMux
	ln  net.Listener
	srv *http.Server
}

// healthShutdownTimeout bounds how long serve waits for requests in flight
// when it is stopped.
const healthShutdownTimeout = 5 * time.Second

// listenHealth binds addr (host:port) and returns the server, not yet serving.
func listenHealth(addr string, h *health) (*healthServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health server: %w", err)
	}
	mux := h.handler()
	return &healthServer{
		mux: mux,
		ln:  ln,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
		},
	}, nil
}

// addr is the bound address (useful with port 0).
func (s *healthServer) addr() net.Addr { return s.ln.Addr() }

// serve answers requests until ctx is done, then shuts down gracefully and
// returns nil; it returns an error only if the server fails before that. It
// closes the listener in every case and must be called once.
func (s *healthServer) serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		err = errors.Join(err, s.srv.Close())
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
