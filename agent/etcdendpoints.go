package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// endpointCheckTimeout bounds one endpoint's status request.
const endpointCheckTimeout = 5 * time.Second

// EndpointStatus is one etcd endpoint as the last check found it.
type EndpointStatus struct {
	Endpoint string `json:"endpoint"`
	Up       bool   `json:"up"`
	// Error is why the last check failed (empty while up).
	Error string `json:"error,omitempty"`
	// Since is when the endpoint was first seen in its current state.
	Since time.Time `json:"since"`
}

// endpointChecker asks each configured etcd endpoint for its status, one
// after the other, every interval. It is only run with several endpoints:
// then the client stays connected through the others when one fails, and
// without these checks a member that is down, or an endpoint written wrong,
// would go unnoticed until the last good one failed too. A check is one
// Status request on a connection of its own (the client's Status dials the
// endpoint), which etcd answers from memory, even when the member has no
// leader: such a member counts as down (leaderless).
type endpointChecker struct {
	endpoints []string
	// status returns nil when endpoint answers a status request within
	// ctx, else why not.
	status   func(ctx context.Context, endpoint string) error
	interval time.Duration
	log      logr.Logger
	// report receives every round's result.
	report func([]EndpointStatus)
}

// run checks at once, then every interval, until ctx is done.
func (c *endpointChecker) run(ctx context.Context) {
	cur := make([]EndpointStatus, len(c.endpoints))
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		c.check(ctx, cur)
		if ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check runs one round: it updates cur, logs each change of state (an
// endpoint down at the first round counts as a change), and reports.
func (c *endpointChecker) check(ctx context.Context, cur []EndpointStatus) {
	now := time.Now()
	type change struct {
		i      int
		err    error
		wasFor time.Duration // how long it had been down (zero at the first round)
	}
	var changes []change
	for i, ep := range c.endpoints {
		cctx, cancel := context.WithTimeout(ctx, endpointCheckTimeout)
		err := c.status(cctx, ep)
		cancel()
		if ctx.Err() != nil {
			return
		}
		first, up := cur[i].Since.IsZero(), err == nil
		if first || up != cur[i].Up {
			if !first || !up {
				ch := change{i: i, err: err}
				if !first {
					ch.wasFor = now.Sub(cur[i].Since)
				}
				changes = append(changes, ch)
			}
			cur[i] = EndpointStatus{Endpoint: ep, Up: up, Since: now}
		}
		cur[i].Error = ""
		if err != nil {
			cur[i].Error = err.Error()
		}
	}
	reachable := 0
	for _, s := range cur {
		if s.Up {
			reachable++
		}
	}
	for _, ch := range changes {
		ep := c.endpoints[ch.i]
		if ch.err != nil {
			c.log.Error(ch.err, "etcd endpoint unreachable; the client uses the others, checking again every "+c.interval.String(),
				"endpoint", ep, "reachable", fmt.Sprintf("%d of %d", reachable, len(cur)))
			continue
		}
		c.log.Info("etcd endpoint reachable again", "endpoint", ep, "downFor", ch.wasFor.Round(time.Second),
			"reachable", fmt.Sprintf("%d of %d", reachable, len(cur)))
	}
	c.report(append([]EndpointStatus(nil), cur...))
}

// checkEndpoint is the production status function: a connection attempt
// of our own first, which fails fast and says why (refused, no route, a
// TLS error), where the client would retry until the deadline and report
// only that; then a Status request.
func (c *etcdConn) checkEndpoint(ctx context.Context, endpoint string) error {
	if err := probeEndpoint(ctx, endpoint, c.aloneUsesTLS(endpoint), c.tls.config()); err != nil {
		return err
	}
	resp, err := c.Status(ctx, endpoint)
	if err != nil {
		return fmt.Errorf("accepts connections but the status request failed: %w", err)
	}
	return leaderless(resp)
}

// leaderless says why a member that answered a status request serves no
// requests: it knows of no leader, because its cluster lost quorum or it is
// cut off from the other members. etcd answers Status from memory all the
// same, with Leader 0 and "etcdserver: no leader" among the answer's
// Errors, not as a failed request.
func leaderless(resp *clientv3.StatusResponse) error {
	if resp.Leader != 0 && !slices.Contains(resp.Errors, rpctypes.ErrNoLeader.Error()) {
		return nil
	}
	return errors.New("answers, but has no leader (its cluster lost quorum, or it is cut off from the other members), so it serves no requests")
}

// aloneUsesTLS says whether the etcd client's connection to endpoint alone,
// which Status makes, uses TLS: the client picks its credentials by that
// endpoint (clientUsesTLS), unless newEtcdClient replaced them for every
// connection by etcdCreds, which it does given TLS settings and a first
// endpoint that is not http.
func (c *etcdConn) aloneUsesTLS(endpoint string) bool {
	haveTLS := c.tls != nil
	return clientUsesTLS(endpoint, haveTLS) || haveTLS && len(c.endpoints) > 0 && endpointUsesTLS(c.endpoints[0])
}
