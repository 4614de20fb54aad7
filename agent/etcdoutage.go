package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc/connectivity"
)

// outageGrace is how long the etcd connection may be down before it is
// reported: a leader election or an etcd restart is over sooner.
const outageGrace = 3 * time.Second

// reprobeInterval is how often the cause of an outage that goes on is
// looked for again, for /status: it may change (etcd back up with a
// certificate the agent refuses, say) while the connection stays down.
const reprobeInterval = 10 * time.Second

// reconnectSettle is how long a connection whose backoff the probe cut
// short (it found an endpoint accepting connections) has to come back
// before the outage is reported.
const reconnectSettle = time.Second

// reportOutages logs each etcd outage twice: once when the connection has
// been down for outageGrace, with what a connection attempt of our own
// finds, and once when it is back, with how long it lasted. It returns when
// ctx is done or the client is closed. cause receives that finding, again
// every reprobeInterval while the outage lasts, and nil once it is over.
//
// The etcd client reconnects inside gRPC and its requests wait for the
// connection, so nothing else in the agent notices an outage: the watch
// resumes by itself, and the keepalive of a long lease just waits (a lease
// in doubt is reported by the lease manager, which also makes the agent
// not ready). Without this an operator would see no sign at all that etcd
// is gone, and with a line per retry they would see nothing else.
func (c *etcdConn) reportOutages(ctx context.Context, log logr.Logger, cause func(error)) {
	r := &outageReporter{conn: c.ActiveConnection(), probe: c.probe, askClientPorts: c.askClientPorts, cause: cause, endpoints: c.endpoints,
		grace: outageGrace, reprobe: reprobeInterval, settle: reconnectSettle, clock: realClock{}, log: log}
	r.run(ctx)
}

// connState is the part of *grpc.ClientConn that outageReporter watches.
type connState interface {
	GetState() connectivity.State
	// WaitForStateChange returns true once the state differs from s, false
	// when ctx is done first.
	WaitForStateChange(ctx context.Context, s connectivity.State) bool
	// ResetConnectBackoff makes a connection in TransientFailure try
	// again now rather than at the end of its backoff.
	ResetConnectBackoff()
}

// clock is the time outageReporter goes by: the real one, or in tests one
// that moves only when told to.
type clock interface {
	Now() time.Time
	// WithDeadline is context.WithDeadline, with d on this clock.
	WithDeadline(ctx context.Context, d time.Time) (context.Context, context.CancelFunc)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) WithDeadline(ctx context.Context, d time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(ctx, d)
}

type outageReporter struct {
	conn connState
	// probe says why etcd cannot be reached (never nil); it is called once
	// the outage has lasted grace, then every reprobe until it is over.
	probe func(context.Context) error
	// askClientPorts, when the connection stays down although probe found
	// an endpoint accepting connections (errEndpointAccepts), asks whether
	// any endpoint is etcd's client port (etcd's peer port answers as
	// etcd's does) and returns its finding, else that of probe; nil when
	// ctx ended meanwhile. Nil: the finding of probe stands. The question
	// costs no connection while an outage ends as etcd comes back.
	askClientPorts func(context.Context, error) error
	// cause receives each finding of probe, and nil when the connection
	// is back.
	cause     func(error)
	endpoints []string
	grace     time.Duration
	reprobe   time.Duration
	// settle: see reconnectSettle.
	settle time.Duration
	clock  clock
	log    logr.Logger
}

// run follows the connection until ctx is done or it shuts down:
//
//	connected ──Connecting/TransientFailure──▶ down ──grace passes──▶ reported (E: unreachable) ◀─┐
//	    ▲                                        │                       │   └──reprobe passes──┘
//	    ├──────────────Ready (V(2) only)─────────┘                       │   (cause again, V(2) if it changed)
//	    └──────────────Ready (I: reachable again, downFor)───────────────┘
//
// When a probe finds an endpoint accepting connections while gRPC waits out
// its backoff (TransientFailure), the backoff is cut short and the
// connection has settle to come back before anything is logged; when it
// finds etcd answering while gRPC's attempt is still in flight, that
// attempt may end first. A connection Ready by then has no outage to report
// (catchUp).
func (r *outageReporter) run(ctx context.Context) {
	var (
		downSince time.Time // zero while connected
		reported  bool
		probedAt  time.Time // the last probe, once reported
		lastCause string
	)
	for {
		state := r.conn.GetState()
		switch state {
		case connectivity.Ready:
			if !downSince.IsZero() {
				d := r.clock.Now().Sub(downSince).Round(100 * time.Millisecond)
				if reported {
					r.log.Info("etcd reachable again", "endpoints", r.endpoints, "downFor", d)
					r.cause(nil)
				} else {
					r.log.V(2).Info("etcd connection re-established", "downFor", d)
				}
			}
			downSince, reported = time.Time{}, false
		case connectivity.Connecting, connectivity.TransientFailure:
			if downSince.IsZero() {
				downSince = r.clock.Now()
				r.log.V(2).Info("etcd connection lost; reconnecting", "state", state.String())
			}
		case connectivity.Shutdown:
			return
		}
		// Idle changes nothing: gRPC parks an unused connection there, and
		// a lost one may pass through it on its way to Connecting. The
		// number of reconnection attempts is not logged: gRPC makes them,
		// and the connection's state stays TransientFailure across them.

		wctx, cancel := ctx, context.CancelFunc(func() {})
		switch {
		case downSince.IsZero():
		case !reported:
			wctx, cancel = r.clock.WithDeadline(ctx, downSince.Add(r.grace))
		default:
			wctx, cancel = r.clock.WithDeadline(ctx, probedAt.Add(r.reprobe))
		}
		changed := r.conn.WaitForStateChange(wctx, state)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if changed {
			continue
		}
		err := r.probe(ctx)
		state, back := r.catchUp(ctx, err)
		if ctx.Err() != nil {
			// The stop ended the probe's dials or the wait: no
			// finding about etcd.
			return
		}
		if back {
			continue
		}
		if errors.Is(err, errEndpointAccepts) && r.askClientPorts != nil {
			if err = r.askClientPorts(ctx, err); ctx.Err() != nil {
				return
			}
		}
		if errors.Is(err, errEndpointAccepts) {
			err = fmt.Errorf("%w, but the etcd client's connection is %s", err, state)
		}
		probedAt = r.clock.Now()
		if !reported {
			reported, lastCause = true, err.Error()
			d := probedAt.Sub(downSince).Round(100 * time.Millisecond)
			r.log.Error(err, "etcd unreachable; the datapath stays as it is, lease changes will be applied once etcd is back; retrying quietly",
				"endpoints", r.endpoints, "downFor", d)
		} else if err.Error() != lastCause {
			lastCause = err.Error()
			r.log.V(2).Info("etcd still unreachable, for another reason", "reason", lastCause)
		}
		// After the line: whoever sees the cause in /status finds it
		// logged.
		r.cause(err)
	}
}

// catchUp gives the client's connection its chance to come back once the
// probe has found err, and returns the connection's state then and whether
// it is Ready: if so the outage is over, whatever the probe found (the
// connection may have come back while the probe ran). When an endpoint
// answers, an attempt in flight (Connecting: after a healed partition, one
// made while the partition held, waiting on the kernel's next try of its
// SYN) has until it ends, up to etcdConnectTimeout, and a connection
// waiting out gRPC's backoff is made to try at once and has settle to come
// back. While an endpoint only accepts connections the backoff is cut short
// too, without waiting.
func (r *outageReporter) catchUp(ctx context.Context, err error) (connectivity.State, bool) {
	answers := errors.Is(err, errEndpointAccepts)
	s := r.conn.GetState()
	if answers && (s == connectivity.Connecting || s == connectivity.Idle) {
		wctx, cancel := r.clock.WithDeadline(ctx, r.clock.Now().Add(etcdConnectTimeout))
		for (s == connectivity.Connecting || s == connectivity.Idle) && r.conn.WaitForStateChange(wctx, s) {
			s = r.conn.GetState()
		}
		cancel()
	}
	switch {
	case s != connectivity.TransientFailure:
	case answers:
		if r.reconnectNow(ctx) {
			return connectivity.Ready, true
		}
	case errors.Is(err, errEndpointSilent):
		// etcd may be about to serve (a restarted member not ready
		// yet): gRPC's next attempt starts now and waits for it. The
		// outage is reported at once, as a hung etcd's is.
		r.conn.ResetConnectBackoff()
	}
	s = r.conn.GetState()
	return s, s == connectivity.Ready
}

// reconnectNow is for a connection that waits out gRPC's backoff (up to 5 s,
// see dialEtcd) while an endpoint accepts connections again (etcd
// restarted, a partition healed): it makes gRPC try at once, and reports
// whether the connection is Ready within settle, false as soon as that
// attempt has failed.
func (r *outageReporter) reconnectNow(ctx context.Context) bool {
	r.conn.ResetConnectBackoff()
	wctx, cancel := r.clock.WithDeadline(ctx, r.clock.Now().Add(r.settle))
	defer cancel()
	tried := false
	for s := r.conn.GetState(); s != connectivity.Ready; s = r.conn.GetState() {
		if s == connectivity.Shutdown || s == connectivity.TransientFailure && tried || !r.conn.WaitForStateChange(wctx, s) {
			return false
		}
		tried = tried || s != connectivity.TransientFailure
	}
	return true
}

// errEndpointAccepts is the probe's finding when an endpoint takes
// connections and answers on them although the client's connection is down.
var errEndpointAccepts = errors.New("an endpoint accepts connections")

// probe says why etcd cannot be reached, as far as connection attempts of
// our own can tell: errEndpointAccepts if nothing keeps the client from
// connecting.
func (c *etcdConn) probe(ctx context.Context) error {
	tc := c.tls.config()
	if err := probeEtcd(ctx, c.endpoints, tc); err != nil {
		return err
	}
	if len(c.endpoints) > 0 && clientUsesTLS(c.endpoints[0], tc != nil) {
		return errEndpointAccepts // the server's side of the handshake is its answer
	}
	return etcdAnswers(ctx, c.endpoints)
}
