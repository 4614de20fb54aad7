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

	"github.com/agentd/agentd/internal/termsafe"
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
// lost and regained, and readiness follows it. It is not ready either once
// the lease's TTL has passed by the clock with no keepalive answered
// (leaseLeft), even before the lease manager has noticed: an agent resumed
// from SIGSTOP or a suspend past the TTL answers a probe before its timers
// have run, and its subnet may be another host's by then. systemd is told
// only once: its READY=1 means "start-up finished", not "healthy now". Each
// change of the readiness or its reason is sent as STATUS=, which `systemctl
// status` shows (also while the unit is still "activating"), and stopping as
// STOPPING=1. A lease that runs out only by the clock is logged and sent
// when it does: a timer is set for the end of its TTL at each keepalive
// answer (leaseTimeChanged), so an idle agent wakes for it only when the
// answers stop. That timer runs on CLOCK_MONOTONIC, which stops while the
// machine sleeps; a probe (/readyz) after a sleep (checkReady) logs and
// sends the change at once.
//
// Liveness is "the process answers", "no start-up step has run for longer
// than its limit" (startup.go), and, once expectHeartbeat was called, also
// "the reconcile loop ticked within its limit", so that a hung start or a
// wedged loop gets the process restarted; watchdog feeds systemd's watchdog
// only while the agent is alive.
//
// All methods are safe for concurrent use and never block on I/O other than
// sd_notify datagrams.
type health struct {
	log logr.Logger
	// notify sends one message (VAR=value lines) to the service manager;
	// it is sdNotify except in tests.
	notify func(state string) (sent bool, err error)
	now    func() time.Time

	mu              sync.Mutex
	leaseHeld       bool
	leased          bool   // a lease was held in this run, for what stopping says stays
	leaseReason     string // why the lease is not held, when it is not
	envWritten      bool
	envReason       string // why subnet.env is not written, once a write failed
	peersProgrammed bool
	wasReady        bool          // the last readiness logged, to log changes only
	maxBeatAge      time.Duration // 0: no heartbeat expected
	lastBeat        time.Time
	// The start-up step under way (startup.go): its name ("" when none),
	// since when, and whether its overrun was logged; stepSeq tells a
	// step's end from a later step's; stepLimit is 0 until startSteps.
	step       string
	stepSince  time.Time
	stepLogged bool
	stepSeq    uint64
	stepLimit  time.Duration

	// leaseLeft, once set (setLeaseLeft), says the time left on our etcd
	// lease as of its last answered keepalive, by a clock that runs on
	// while the process is stopped or the machine sleeps; false when
	// nothing is known.
	leaseLeft func() (time.Duration, bool)
	// leaseEnd fires at the end of our etcd lease's TTL as the last
	// answer gave it (leaseTimeChanged); nil until then. leaseEndOff:
	// the agent stops, and it is not set again.
	leaseEnd    *time.Timer
	leaseEndOff bool

	// leasesRefused is why etcd grants no new lease now (its NOSPACE or
	// CORRUPT alarm), "" while it does: said after leaseReason, since the
	// lease cannot be taken or recreated meanwhile.
	leasesRefused string

	// notifyMu orders the messages to the service manager: each
	// sendStatus reads the state and sends under it, so the STATUS= sent
	// last is the current one. It is taken before mu, never after.
	notifyMu  sync.Mutex
	notified  bool   // READY=1 sent
	status    string // the STATUS= sent last
	stopped   bool   // STOPPING=1 sent: no STATUS= after it
	backend   string // the backend's type, once the network config is read
	notifyErr bool   // the last message failed, and that was logged
	starved   bool   // the watchdog is not fed: the agent is not alive
	// unbound is the health server's address while it is not bound
	// (healthbind.go): STATUS= says so, since /status cannot.
	unbound string
}

func newHealth(log logr.Logger) *health {
	return &health{
		log:         log,
		notify:      sdNotify,
		now:         time.Now,
		leaseReason: "no lease acquired yet",
	}
}

func sdNotify(state string) (bool, error) { return daemon.SdNotify(false, state) }

// maxReasonLen bounds each reason the agent is not ready for, once escaped
// as /readyz and STATUS= say it (termsafe.Fit: kept as it came, for
// /status): a reason may quote what etcd holds (an invalid network config's
// error quotes its value, up to etcd's 1.5 MB, three times), and systemd
// ignores a notification of PIPE_BUF (4096) bytes or more whole. It is more
// than any reason that quotes nothing (the missing config key's, with its
// etcdctl hint, is 330 bytes), and two such reasons and the rest of STATUS=
// stay under maxStatusLen, so each is said whatever the others hold: cut to
// 1 kB as it came, a reason of ESCs took 4 kB escaped, and hid the others.
const maxReasonLen = 1024

// maxStatusLen bounds STATUS='s text, and a probe's reason, once escaped
// (termsafe.Cut: systemd drops a notification that is not UTF-8, and
// `systemctl status`, kubelet's events and curl print them to a terminal):
// a reason's byte may take 4 there (\x9b), and READY=1 may share the
// notification.
const maxStatusLen = 3800

// setLeaseHeld records whether our own lease is held; reason says why not.
// Its signature is subnet.ManagerConfig.OnLeaseState's.
func (h *health) setLeaseHeld(held bool, reason string) {
	h.mu.Lock()
	h.leaseHeld = held
	h.leased = h.leased || held
	h.leaseReason = termsafe.Fit(reason, maxReasonLen)
	if !held && reason == "" {
		h.leaseReason = "lease not held"
	}
	h.changedLocked()
}

// setEtcdRefusesLeases records why etcd grants no new lease now (an alarm
// raised), "" once it does: while the lease is not held, the reason says it
// too, as the lease cannot be taken or recreated meanwhile; while it is
// held, keepalives go on and nothing changes.
func (h *health) setEtcdRefusesLeases(why string) {
	h.mu.Lock()
	h.leasesRefused = why
	h.changedLocked()
}

// setLeaseLeft makes readiness ask left for the time left on our etcd lease
// (leaseTTL.left of our lease): while the lease is held, none left is not
// ready. left must not call back into h.
func (h *health) setLeaseLeft(left func() (time.Duration, bool)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leaseLeft = left
}

// leaseTimeChanged judges the readiness again, logging and sending its
// change (changedLocked), because the time left on our etcd lease may have
// changed: a keepalive or renewal answered, or the etcd client gave the
// lease up (leaseTTL.changed). While time is left it sets a timer for the
// TTL's end, which calls it again then: a lapse (the answers stopped, the
// agent was stopped past it) is logged and sent as STATUS= when it happens,
// not at the next change of readiness. Each answer moves the timer, so
// while etcd answers it never fires.
func (h *health) leaseTimeChanged() {
	h.mu.Lock()
	if h.leaseLeft != nil && !h.leaseEndOff {
		if left, ok := h.leaseLeft(); ok && left > 0 {
			if h.leaseEnd == nil {
				h.leaseEnd = time.AfterFunc(left, h.leaseTimeChanged)
			} else {
				h.leaseEnd.Reset(left)
			}
		}
	}
	h.changedLocked()
}

// checkReady is ready, logging and sending a change of the readiness that
// no event brought (changedLocked): our lease's TTL passed by a clock the
// agent's timers do not follow, while the machine slept. It is /readyz's:
// /status is also asked from within a notification (tests), where
// sending would wait for itself.
func (h *health) checkReady() (bool, string) {
	h.mu.Lock()
	h.changedLocked()
	return h.ready()
}

// leaseRanOut is the reason the agent is not ready while its lease is held
// by the lease manager's account but its TTL has passed by the clock with no
// keepalive answered: until etcd confirms the lease (a keepalive or a
// renewal answered), or the lease manager reports it lost.
const leaseRanOut = "our etcd lease's TTL has passed with no keepalive answered (the agent was stopped or the machine slept, or etcd did not answer): not ready until etcd confirms it, as its subnet may be another host's by now"

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
	h.envReason = termsafe.Fit("subnet.env not written: "+err.Error(), maxReasonLen)
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

// changedLocked logs readiness changes and tells the service manager
// (sendStatus). It is called with h.mu held and releases it, so that the
// notification is sent outside the lock.
func (h *health) changedLocked() {
	ready, reason := h.readyLocked()
	changed := ready != h.wasReady
	h.wasReady = ready
	h.mu.Unlock()

	if changed {
		if ready {
			h.log.Info("ready")
		} else {
			h.log.Info("not ready", "reason", reason)
		}
	}
	h.sendStatus()
}

// setHealthUnbound records that the health server's address addr is not
// bound ("" once it is), and tells the service manager.
func (h *health) setHealthUnbound(addr string) {
	h.notifyMu.Lock()
	h.unbound = addr
	h.notifyMu.Unlock()
	h.sendStatus()
}

// sendStatus sends the readiness as STATUS=ready or STATUS=not ready:
// <reasons> if it differs from the one sent last, with READY=1 the first
// time the agent is ready; nothing once stopping was sent. A message that
// fails is not sent again.
func (h *health) sendStatus() {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	if h.stopped {
		return
	}
	ready, reason := h.ready()
	status := "ready"
	if !ready {
		status = "not ready: " + reason
	}
	if h.unbound != "" {
		status += "; health server not listening on " + h.unbound + " (another program holds the port, or the IP is not on this host): binding it again"
	}
	var msg []string
	readyNow := ready && !h.notified
	if readyNow {
		h.notified = true
		msg = append(msg, daemon.SdNotifyReady)
	}
	if status != h.status {
		h.status = status
		msg = append(msg, "STATUS="+termsafe.Cut(strings.ReplaceAll(status, "\n", " "), maxStatusLen))
	}
	if len(msg) == 0 {
		return
	}
	sent, err := h.send(strings.Join(msg, "\n"))
	switch {
	case !readyNow || err != nil:
	case sent:
		h.log.V(2).Info("told systemd that start-up finished")
	default:
		h.log.V(2).Info("not started by systemd with Type=notify; no readiness notification sent")
	}
}

// setBackend records the backend's type, for what stopping says stays.
func (h *health) setBackend(typ string) {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	h.backend = typ
}

// stopping tells the service manager that the agent stops, and what stays.
func (h *health) stopping() {
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	if h.stopped {
		return
	}
	h.stopped = true
	h.mu.Lock()
	leased := h.leased
	h.leaseEndOff = true
	if h.leaseEnd != nil {
		h.leaseEnd.Stop()
	}
	h.mu.Unlock()
	h.send(daemon.SdNotifyStopping + "\nSTATUS=stopping; " + leftInPlace(h.backend, leased))
}

// leftInPlace says what a stop leaves. Before a lease was taken (etcd
// unreachable, the network config absent or invalid, no free subnet) there
// is no lease to keep, and nothing that needs one (routes, subnet.env) was
// set up. After, it is the datapath of the backend typ: vxlan's and
// host-gw's are the kernel's and go on forwarding; udp's device and routes
// stay, but its forwarding is the agent's and stops with it.
func leftInPlace(typ string, leased bool) string {
	switch {
	case !leased:
		return "no lease was taken yet, so no routes were set up and subnet.env was not written"
	case typ == "udp":
		return "the lease, flannel0 and its routes stay in place, but udp carries nothing until agentd runs again (the descriptor keeper queues what arrives meanwhile)"
	}
	return "the datapath and the lease stay in place"
}

// send sends msg: sent is false without NOTIFY_SOCKET. A failure
// (NOTIFY_SOCKET names a socket that is gone) is logged once until a
// message goes through again; the agent carries on. It is called with
// h.notifyMu held.
func (h *health) send(msg string) (sent bool, err error) {
	sent, err = h.notify(msg)
	switch {
	case err != nil && !h.notifyErr:
		h.notifyErr = true
		h.log.Error(err, "cannot notify systemd (NOTIFY_SOCKET); going on without", "message", msg)
	case err == nil && h.notifyErr:
		h.notifyErr = false
		h.log.Info("notifying systemd again")
	}
	return sent, err
}

// watchdog feeds systemd's watchdog (the unit's WatchdogSec=, given as
// WATCHDOG_USEC) every half interval until ctx is done (feedWatchdog).
func (h *health) watchdog(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval / 2)
	defer t.Stop()
	for {
		h.feedWatchdog(interval)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// feedWatchdog sends WATCHDOG=1 if the agent is alive as /healthz means it.
// Once it is not (a wedged reconcile loop), the pings stop and systemd kills
// the agent interval later, which Restart=on-failure restarts.
func (h *health) feedWatchdog(interval time.Duration) {
	alive, reason := h.alive()
	h.notifyMu.Lock()
	defer h.notifyMu.Unlock()
	switch {
	case alive:
		if h.starved {
			h.starved = false
			h.log.Info("feeding systemd's watchdog again")
		}
		h.send(daemon.SdNotifyWatchdog)
	case !h.starved:
		h.starved = true
		h.log.Error(nil, "not feeding systemd's watchdog: it will kill the agent", "reason", reason, "watchdogSec", interval)
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
	switch {
	case !h.leaseHeld && h.leasesRefused != "":
		why = append(why, h.leaseReason+"; "+h.leasesRefused)
	case !h.leaseHeld:
		why = append(why, h.leaseReason)
	case h.leaseLeft != nil:
		if left, ok := h.leaseLeft(); ok && left <= 0 {
			why = append(why, leaseRanOut)
		}
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

// alive reports whether the start-up step under way (if any) is within its
// limit and the watched loop (if any) is turning.
func (h *health) alive() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if ok, reason := h.stepAliveLocked(); !ok {
		return false, reason
	}
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
		probeReply(w, h.checkReady)
	})
	return mux
}

// probeReply answers a probe: "ok", or 503 and "not ok: <reason>", the
// reason on one line with its control and format characters and the bytes
// that are not UTF-8 escaped as Go quotes them (termsafe.Text), as agentctl
// prints it: a reason may quote what etcd holds, and kubelet's events and
// an operator's curl show it. It is cut to maxStatusLen once escaped, as
// STATUS= is, though each reason is already cut to maxReasonLen escaped.
func probeReply(w http.ResponseWriter, check func() (bool, string)) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	ok, reason := check()
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ok: %s\n", termsafe.Cut(reason, maxStatusLen))
		return
	}
	fmt.Fprintln(w, "ok")
}

// healthServer is the HTTP server of the probes. listen binds it (listenHealth
// makes one and binds it); serve runs it.
type healthServer struct {
	// mux routes the requests; add handlers (e.g. /metrics) before serve.
	mux *http.ServeMux
	ln  net.Listener
	srv *http.Server
}

// healthShutdownGrace is how long serve waits for requests in flight when
// it is stopped, before it closes their connections. An answer takes
// microseconds to make (the last /readyz kubelet asks, a /metrics scrape),
// so one begun before the stop still goes out; but a connection whose
// request has not come in whole (a client that connected and sent nothing
// yet, or sends slowly) counts as in flight until ReadHeaderTimeout, and
// the agent's exit waits for serve.
const healthShutdownGrace = 200 * time.Millisecond

// listenHealth binds addr (host:port) and returns the server, not yet serving.
func listenHealth(addr string, h *health) (*healthServer, error) {
	s := newHealthServer(h)
	if err := s.listen(addr); err != nil {
		return nil, err
	}
	return s, nil
}

// listen binds addr (host:port) for serve. A failure is
// "health server: listen tcp …", with the errno to match (bindMayFree).
func (s *healthServer) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health server: %w", err)
	}
	s.ln = ln
	return nil
}

// newHealthServer returns the server of h's probes, not yet bound.
func newHealthServer(h *health) *healthServer {
	mux := h.handler()
	lim := &connLimit{max: healthConnsMax(h.log), open: map[net.Conn]time.Time{}}
	return &healthServer{
		mux: mux,
		srv: &http.Server{
			Handler:           mux,
			ConnState:         lim.track,
			ErrorLog:          httpErrorLog(h.log),
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       10 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxHeaderBytes:    maxHealthHeaderBytes,
		},
	}
}

// maxHealthHeaderBytes bounds a request's header (net/http allows 4 kB
// more). Probes, Prometheus and agentctl send well under 1 kB, a bearer
// token a few kB; net/http's default, 1 MB, let the maxHealthConns
// connections that anyone who reaches the address may hold cost 64 MB and
// more, where they now cost about 1.3 MB.
const maxHealthHeaderBytes = 16 << 10

// maxHealthConns is how many connections the health server keeps open at
// once. Each costs about 20 kB and a file descriptor, and a client may keep
// one for IdleTimeout after each request, so for ever: without a bound, a
// process on the host (or anyone who can reach the address) held
// thousands, up to the DaemonSet's memory limit or the unit's LimitNOFILE,
// which the agent needs for etcd, netlink and subnet.env. The probes,
// a Prometheus scrape and agentctl need a few. A low file descriptor
// limit lowers it (healthConnsMax).
const maxHealthConns = 64

// connLimit bounds the open connections of an http.Server through its
// ConnState hook: past max, a new connection closes the one that has been
// in its state longest, whichever it is: idle after a request, connected
// without a request yet, or being answered to a client that does not read.
// So held connections cannot lock the probes out: a probe sends its
// request at once, and an answer takes microseconds.
type connLimit struct {
	max  int
	mu   sync.Mutex
	open map[net.Conn]time.Time // in its state since
}

func (l *connLimit) track(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch s {
	case http.StateNew:
		for len(l.open) >= l.max {
			var oldest net.Conn
			var since time.Time
			for o, t := range l.open {
				if oldest == nil || t.Before(since) {
					oldest, since = o, t
				}
			}
			oldest.Close()
			delete(l.open, oldest)
		}
		l.open[c] = time.Now()
	case http.StateActive, http.StateIdle:
		l.open[c] = time.Now()
	case http.StateClosed, http.StateHijacked:
		delete(l.open, c)
	}
}

// serve answers requests until ctx is done, then shuts down: it stops
// taking connections, lets requests in flight finish for
// healthShutdownGrace, closes the connections still open and returns nil;
// it returns an error only if the server fails before that. It closes the
// listener in every case and must be called once, after listen.
func (s *healthServer) serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthShutdownGrace)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		cerr := s.srv.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			// Cutting what the grace did not see through is part
			// of the stop, not a failure of it.
			err = nil
		}
		err = errors.Join(err, cerr)
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	if err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
