package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/delay"
	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/connectivity"
)

// etcdCallTimeout bounds one start-up request, so that an unreachable etcd
// is reported and retried rather than waited on silently.
const etcdCallTimeout = 10 * time.Second

// etcdConnectTimeout is how long the client's connection attempt to an
// address that does not answer lasts (see dialEtcd).
const etcdConnectTimeout = 5 * time.Second

// etcdConn is the etcd client and what is needed to explain its failures.
type etcdConn struct {
	*clientv3.Client
	endpoints []string
	tls       *etcdTLS       // nil without TLS
	auth      *tokenlessAuth // nil without a user name
	user      string         // --etcd-username
	// proxyNote ends the explanations of probes when the client's
	// connections go through a proxy (etcdProxyNote), "" when not.
	proxyNote string
}

// Close closes the client and, if it was made, tokenlessAuth's.
func (c *etcdConn) Close() error {
	err := c.Client.Close()
	if c.auth != nil {
		c.auth.close()
	}
	return err
}

// dialEtcd makes the client (log reports changes of the CA file), waiting
// up to authWait for etcd to answer the Authenticate request that
// clientv3.New sends, with --etcd-username, before it returns (without a
// user name it sends nothing and does not wait). No answer is explained as a request's is (explainAfter): the bare
// "context deadline exceeded" said nothing of a refused connection or a
// failed TLS handshake. A failure that waiting cannot mend (brokenForGood)
// ends the wait at the first failed connection, with its cause (an
// authUnansweredError, which connectEtcd retries); the end of ctx ends it
// with ctx's error.
func dialEtcd(ctx context.Context, cfg *Config, log logr.Logger, authWait time.Duration) (*etcdConn, error) {
	cc := clientv3.Config{
		Endpoints:   cfg.EtcdEndpoints,
		DialTimeout: authWait,
		// Notice a dead connection (a partition, a killed etcd) within
		// seconds rather than at the next request.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		Username:             cfg.EtcdUsername,
		Password:             cfg.EtcdPassword,
		// The client's own zap logs repeat every retry; agentd reports
		// etcd trouble itself, once per outage (reportOutages).
		Logger: zap.NewNop(),
		// gRPC's default reconnect backoff grows to 2 minutes, so after a
		// long outage the agent would find etcd back only up to that late;
		// cap it (one connection attempt per agent every few seconds
		// costs etcd nothing) and give up on an attempt to a silent
		// address after 5 s rather than 20.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: time.Second, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: etcdConnectTimeout,
		})},
	}
	var tc *etcdTLS
	if cfg.EtcdCAFile != "" || cfg.EtcdCertFile != "" {
		var err error
		if tc, err = newEtcdTLS(cfg, log); err != nil {
			return nil, fmt.Errorf("etcd TLS config: %w", rootDenied(err))
		}
		cc.TLS = tc.base
		// The client makes fixed gRPC credentials of cc.TLS (the CAs
		// read now, for good) where it uses TLS; ours, a dial option it
		// applies after its own, replace them (TestEtcdCARotation fails
		// if that stops being so).
		if len(cfg.EtcdEndpoints) > 0 && endpointUsesTLS(cfg.EtcdEndpoints[0]) {
			cc.DialOptions = append(cc.DialOptions, grpc.WithTransportCredentials(etcdCreds{tc}))
		}
	}
	var auth *tokenlessAuth
	if cc.Username != "" {
		auth = &tokenlessAuth{cfg: cc}
		auth.cfg.Username, auth.cfg.Password = "", ""
		auth.cfg.DialOptions = slices.Clip(cc.DialOptions)
		cc.DialOptions = append(slices.Clip(cc.DialOptions), grpc.WithChainUnaryInterceptor(auth.intercept))
	}
	conn := &etcdConn{endpoints: cfg.EtcdEndpoints, tls: tc, auth: auth, user: cfg.EtcdUsername,
		proxyNote: etcdProxyNote(cfg.EtcdEndpoints, http.ProxyFromEnvironment)}
	var w *authWatch
	if auth != nil {
		w = watchAuth(ctx, conn, &cc)
	}
	cli, err := clientv3.New(cc)
	var broken error
	if w != nil {
		broken = w.stop()
	}
	if err != nil {
		if auth != nil {
			auth.close()
		}
		switch {
		case broken != nil:
			return nil, &authUnansweredError{fmt.Errorf("authenticate to etcd as %s: %w", cfg.EtcdUsername, broken)}
		case ctx.Err() != nil:
			return nil, fmt.Errorf("authenticate to etcd as %s: %w", cfg.EtcdUsername, ctx.Err())
		case errors.Is(err, context.DeadlineExceeded):
			return nil, &authUnansweredError{fmt.Errorf("authenticate to etcd as %s: %w", cfg.EtcdUsername, conn.explainAfter(ctx, err, authWait))}
		}
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.EtcdEndpoints, ","), withAuthHint(err, cfg.EtcdUsername))
	}
	conn.Client = cli
	return conn, nil
}

// authWatch ends clientv3.New's wait for etcd to authenticate the user
// when ctx ends, or at the first failed connection when the failure is one
// that waiting cannot mend (brokenForGood): the client's Authenticate
// request hands over the connection it waits on.
type authWatch struct {
	cancelDial context.CancelFunc // ends New's wait
	stopAfter  func() bool        // context.AfterFunc's, for ctx
	cancel     context.CancelFunc // ends the watch
	done       chan struct{}
	broken     error // once done is closed

	mu       sync.Mutex
	returned bool // New has returned: a client it made is no longer ours to end
}

// watchAuth sets cc up (its Context, an interceptor) for w to follow
// clientv3.New(cc); w.stop must be called once New has returned.
func watchAuth(ctx context.Context, c *etcdConn, cc *clientv3.Config) *authWatch {
	// The client's own context, so that it ends New's wait; it must not
	// be ctx itself, whose end would close a client made.
	dctx, cancelDial := context.WithCancel(context.Background())
	wctx, cancel := context.WithCancel(ctx)
	w := &authWatch{cancelDial: cancelDial, cancel: cancel, done: make(chan struct{})}
	w.stopAfter = context.AfterFunc(ctx, w.endDial)
	conns := make(chan *grpc.ClientConn, 1)
	cc.Context = dctx
	cc.DialOptions = append(slices.Clip(cc.DialOptions), grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, gc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method == authenticateMethod {
				select {
				case conns <- gc:
				default:
				}
			}
			return invoker(ctx, method, req, reply, gc, opts...)
		}))
	go func() {
		defer close(w.done)
		select {
		case gc := <-conns:
			if w.broken = c.brokenForGood(wctx, gc); w.broken != nil {
				w.endDial()
			}
		case <-wctx.Done():
		}
	}()
	return w
}

func (w *authWatch) endDial() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.returned {
		w.cancelDial()
	}
}

// stop ends the watch and returns the failure it found, if any.
func (w *authWatch) stop() error {
	w.mu.Lock()
	w.returned = true
	w.mu.Unlock()
	w.stopAfter()
	w.cancel()
	<-w.done
	return w.broken
}

// tokenlessAuth lets the client get a new auth token from etcd 3.4. etcd
// keeps its simple tokens in memory, so a restarted etcd has forgotten ours;
// the client then asks for a new one, but sends the forgotten token along
// with Authenticate, which etcd 3.4 (3.4.23 seen) refuses as "invalid auth
// token" (3.6 and 3.7 ignore a token there). The client asked again at once,
// without end: every request and the lease watch failed until the agent
// restarted, and etcd logged the refusal dozens of times a second.
// intercept sends such a refused Authenticate again over a connection of its
// own, which carries no token.
type tokenlessAuth struct {
	cfg clientv3.Config // the client's, without user name and password

	mu     sync.Mutex
	cli    *clientv3.Client // made at the first refusal
	closed bool
}

const authenticateMethod = "/etcdserverpb.Auth/Authenticate"

func (a *tokenlessAuth) intercept(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	err := invoker(ctx, method, req, reply, cc, opts...)
	if method != authenticateMethod || !errors.Is(rpctypes.Error(err), rpctypes.ErrInvalidAuthToken) {
		return err
	}
	cli, cerr := a.client()
	if cerr != nil {
		return err // closing: the refusal is the answer
	}
	return cli.ActiveConnection().Invoke(ctx, method, req, reply, opts...)
}

func (a *tokenlessAuth) client() (*clientv3.Client, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("etcd client closed")
	}
	if a.cli == nil {
		cli, err := clientv3.New(a.cfg)
		if err != nil {
			return nil, err
		}
		a.cli = cli
	}
	return a.cli, nil
}

func (a *tokenlessAuth) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	if a.cli != nil {
		a.cli.Close()
	}
}

// explainAfter turns a request that timed out (after timeout) into the
// reason: the client only reports the deadline, whether etcd is
// unreachable, rejects our certificate, takes connections but answers
// nothing on them (hung), or answers but not the request. It asks
// what the outage reporter asks (probe), so that both name a hung etcd
// alike, and then, as brokenForGood does, whether plain-text endpoints
// that answer HTTP are etcd's client port at all (probeClientPorts): etcd's
// peer port beside an endpoint that refuses connections was blamed on
// quorum.
func (c *etcdConn) explainAfter(ctx context.Context, err error, timeout time.Duration) error {
	if !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		return withAuthHint(err, c.user)
	}
	switch perr := c.probeClientPorts(ctx); {
	case errors.Is(perr, errEndpointAccepts):
		return fmt.Errorf("etcd did not answer within %s although %s accepts connections (no quorum, or overloaded?)%s: %w",
			timeout, strings.Join(c.endpoints, ","), c.proxyNote, err)
	case perr == nil: // ctx ended while the probe waited for an answer
		return err
	default:
		return fmt.Errorf("etcd did not answer within %s: %w%s (%w)", timeout, perr, c.proxyNote, err)
	}
}

// withAuthHint adds to a refusal by etcd's authentication the flag that
// fixes it, user being --etcd-username ("" when not given); other errors
// come back as they are. etcd's words alone ("etcdserver: user name is
// empty") do not say that agentd has a flag for it.
func withAuthHint(err error, user string) error {
	is := func(target error) bool { return errors.Is(err, target) || errors.Is(rpctypes.Error(err), target) }
	var hint string
	switch {
	case is(rpctypes.ErrUserEmpty) && user == "":
		hint = "etcd has authentication on: give --etcd-username and --etcd-password"
	case is(rpctypes.ErrAuthFailed):
		hint = "check --etcd-username and --etcd-password"
	case is(rpctypes.ErrPermissionDenied) && user != "":
		hint = fmt.Sprintf("the roles of --etcd-username %s do not grant this key: check --etcd-prefix, or grant the role readwrite on the prefix", user)
	default:
		return err
	}
	return fmt.Errorf("%w; %s", err, hint)
}

// brokenForGood returns, once conn has failed (TransientFailure)
// and a probe finds a configProblem at every endpoint, what the probe found;
// nil when ctx ends first. The probe is run again at each failure of the
// connection. Plain-text endpoints that answer HTTP while the connection
// fails are asked whether they are etcd's client port at all
// (notClientPorts).
func (c *etcdConn) brokenForGood(ctx context.Context, conn connState) error {
	for {
		state := conn.GetState()
		if state == connectivity.TransientFailure {
			if err := c.probeClientPorts(ctx); onlyConfigProblems(err) {
				return err
			}
		}
		if !conn.WaitForStateChange(ctx, state) {
			return nil
		}
	}
}

// authUnansweredError is dialEtcd's error when etcd did not answer the
// authentication of the user: retrying may help (connectEtcd).
type authUnansweredError struct{ err error }

func (e *authUnansweredError) Error() string { return e.err.Error() }
func (e *authUnansweredError) Unwrap() error { return e.err }

// connectEtcd is dialEtcd for the daemon. With --etcd-username the
// client exists only once etcd has answered the user's authentication:
// while etcd does not answer (stopped, unreachable, refusing our TLS) the
// agent retries, as it retries its first requests, and /readyz says why.
// It exited instead, and under a DaemonSet each exit lengthens the
// crash-loop backoff, to minutes after etcd is back. Other errors (a wrong
// password, an unreadable certificate file) are returned. A stop ends the
// attempt under way at once (dialEtcd): it waited for it, up to 10 s (5 for
// the answer, 5 to probe).
func connectEtcd(ctx context.Context, cfg *Config, log logr.Logger, report func(what string, err error)) (*etcdConn, error) {
	warnEtcdTLSFiles(cfg, log)
	logEtcdProxy(log, cfg.EtcdEndpoints, http.ProxyFromEnvironment)
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	c, err := retry(ctx, log, explained{}, "connect to etcd", report, nil, func(context.Context) (*etcdConn, error) {
		c, err := dialEtcd(ctx, cfg, log, etcdConnectTimeout)
		if _, unanswered := errors.AsType[*authUnansweredError](err); err != nil && !unanswered && ctx.Err() == nil {
			stop(err)
		}
		return c, err
	})
	if cerr := context.Cause(ctx); err != nil && cerr != nil && !errors.Is(cerr, context.Canceled) {
		return nil, cerr
	}
	return c, err
}

// explainer runs a request with a deadline and turns its failure into its
// cause (etcdConn.do).
type explainer interface {
	do(ctx context.Context, timeout time.Duration, f func(context.Context) error) error
}

// explained is the explainer of requests whose errors name their cause
// already.
type explained struct{}

func (explained) do(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(ctx)
}

// do runs f with a deadline of timeout and returns its error, explained
// when f got no answer: the endpoint refused or could not be reached, its
// TLS handshake failed, or it takes connections but answers nothing on
// them. Finding out takes up to 5 s more (the endpoints are probed at once:
// a connection and TLS handshake within 3 s, then up to 2 s for an
// answer). A failure that waiting cannot mend (brokenForGood: etcd's
// certificate is of a CA we do not trust, etcd refuses ours, the endpoint's
// scheme or port is wrong) ends f at once, with the cause, rather than when
// timeout runs out: the etcd client would retry it quietly until then. ctx
// bounds the probes too.
func (c *etcdConn) do(ctx context.Context, timeout time.Duration, f func(context.Context) error) error {
	return c.doBy(ctx, time.Now().Add(timeout), timeout, f)
}

// doBy is do with f's deadline given: timeout, which the explanation
// names, is how long the caller will have waited by then in all.
func (c *etcdConn) doBy(ctx context.Context, deadline time.Time, timeout time.Duration, f func(context.Context) error) error {
	fctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var broken error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if broken = c.brokenForGood(fctx, c.ActiveConnection()); broken != nil {
			cancel()
		}
	}()
	err := f(fctx)
	cancel()
	<-done
	switch {
	case err == nil:
		return nil
	case broken != nil:
		return fmt.Errorf("cannot connect to etcd: %w%s", broken, c.proxyNote)
	}
	return c.explainAfter(ctx, err, timeout)
}

// retryCausesKept is how many distinct causes of failure retry remembers
// having logged: enough for the few that take turns (an etcd host that is
// down is "no route to host" at one attempt and "i/o timeout" at another,
// as the neighbour lookup has failed or is still under way), and a bound on
// causes that never come back (a message that names a changing port).
const retryCausesKept = 8

// retry calls f, through etcd's do, until it succeeds, ctx is done, or it
// fails in a way that retrying cannot fix. Each distinct failure is logged
// once (also when causes take turns), with the number of attempts when it
// finally clears; report is given each change of cause, so that /readyz
// says the current one, and is told (with a nil error) when it clears. One
// that waiting cannot mend (a wrong CA, scheme or port) is so at the first
// failed connection, not when the attempt's etcdCallTimeout runs out; the
// agent retries all the same, since the files and etcd may be fixed.
//
// A signal on wake (nil: none) ends the wait between attempts early, no
// sooner than retryWokenAfter after the last attempt began: the network
// config changed, which may be what the attempts wait for (a pool widened,
// a config fixed). An error of f that is errRetryEnd ends retry at once,
// without a log line or a report: f's caller acts on it. Each attempt is a
// start-up step of the health in ctx, if any (attemptStarts).
func retry[T any](ctx context.Context, log logr.Logger, etcd explainer, what string, report func(what string, err error), wake <-chan struct{}, f func(context.Context) (T, error)) (T, error) {
	b := delay.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
	var last string     // the cause of the last failure, reported
	var logged []string // the causes logged, the latest retryCausesKept
	for attempt := 1; ; attempt++ {
		var v T
		began := time.Now()
		endStep := attemptStarts(ctx, what)
		err := etcd.do(ctx, etcdCallTimeout, func(ctx context.Context) error {
			var err error
			v, err = f(ctx)
			return err
		})
		endStep()
		if err == nil {
			if last != "" {
				log.Info("succeeded after retrying", "what", what, "attempts", attempt)
				report(what, nil)
			}
			return v, nil
		}
		if ctx.Err() != nil {
			// Stopped, perhaps while do probed etcd (up to 2 s per
			// silent endpoint): the probe's cut-short answer is no
			// finding.
			return v, ctx.Err()
		}
		if errors.Is(err, errRetryEnd) {
			return v, err
		}
		if msg := err.Error(); msg != last {
			if !slices.Contains(logged, msg) {
				// err may quote what etcd holds (an invalid network
				// config's value, up to 1.5 MB), as /readyz does.
				log.Error(clip.CutError(err, maxReasonLen), "cannot "+what+"; retrying", "attempt", attempt)
				logged = append(logged, msg)
				if len(logged) > retryCausesKept {
					logged = logged[1:]
				}
			}
			report(what, err)
			last = msg
		}
		if err := sleepOrWake(ctx, b.Next(), wake, began.Add(retryWokenAfter)); err != nil {
			return v, err
		}
	}
}

// errRetryEnd, as f's error, ends retry at once (retry).
var errRetryEnd = errors.New("retry ended by its caller")

// retryWokenAfter is how soon after an attempt began a wake starts the next
// one: a script rewriting the network config in a loop makes a waiting
// agent ask etcd at most twice a second.
const retryWokenAfter = 500 * time.Millisecond

// sleepOrWake waits d, or until a signal on wake but not before earliest,
// or until ctx is done (its error).
func sleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}, earliest time.Time) error {
	if woken, err := delay.SleepOrWake(ctx, d, wake); !woken {
		return err
	}
	return delay.Sleep(ctx, min(time.Until(earliest), d))
}
