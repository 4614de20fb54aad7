package subnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/delay"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Run holds the lease that Acquire returned and keeps the peer set current
// until ctx is done (then it returns nil, leaving the lease in etcd).
//
// Holding the lease:
//
//	held ──keepalive ends; etcd: lease expired/revoked───────┐
//	 │  ──own key deleted──────────────────────────────────┤
//	 │  ──own key recreated by another writer──────────────┤
//	 │  ──own key overwritten naming another host──────────┤
//	 │  ──own key taken over by an agentd with our identity┤
//	 │  ──etcd's history replaced, own key not as written──┤
//	 │                                                      v
//	 │ <──────── same key recreated, or taken over ──── reacquire ──key held by another host──> ErrLeaseLost
//	 │                                                              ──or absent, and another host's key
//	 │                                                                overlaps our subnet──────────> ErrLeaseLost
//	 │                                                              ──or held by an agentd with our
//	 │                                                                identity (byTwin)──> ErrLeaseLost, ErrHostIDShared
//	 │
//	 ├──own key overwritten in place (same create revision)──> write our value back (CAS), stay held;
//	 │                                                         retried with backoff until it succeeds
//	 │                                                         or the key changes again
//	 └──own key made a reservation for our public IP──────────> write our value back without an
//	                                                           etcd lease, revoke ours, stay held
//
// A reacquire never picks another subnet: subnet.env and the host's containers
// use this one.
func (m *Manager) Run(ctx context.Context) error {
	if _, ok := m.Own(); !ok {
		return errors.New("subnet manager: Run before a successful Acquire")
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.watchLoop(ctx)
	}()
	err := m.holdLease(ctx)
	cancel()
	wg.Wait()
	return err
}

func (m *Manager) holdLease(ctx context.Context) error {
	for {
		lost, err := m.keepAlive(ctx)
		if err != nil || ctx.Err() != nil {
			return err
		}
		// The line before /readyz and /status say so.
		m.log.Error(nil, "OWN LEASE LOST; taking the same subnet back", "subnet", m.own.Subnet, "reason", lost)
		m.cfg.OnLeaseState(false, lost)
		if err := m.reacquire(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		m.Stats.Reacquired.Add(1)
	}
}

// keepAlive keeps the current lease alive until it is lost (returning why) or
// ctx is done. A reservation has no etcd lease to keep alive.
//
// The etcd client closes a keepalive channel when etcd says the lease is
// gone, but also when etcd does not answer in time: the first answer within
// the client's DialTimeout plus a second, later ones within the TTL. A close
// is therefore only a reason to look: while etcd renews the lease when asked
// directly, or cannot be asked and the lease's last known expiry has not
// passed, it is kept alive again and stays held.
//
// The lease's expiry is counted from the send of the renewal answered last
// (ManagerConfig.KeepAliveSent for the client's), as etcd counts the TTL
// from its arrival. The client sends its next keepalive a third of the TTL
// after an answer, so with a round trip of over a third of the TTL its
// answer comes after that expiry. So keepAlive sends a renewal of its own
// (renewOnce, on a stream of its own) renewEvery after the last send known,
// the client's or its own, without waiting for the answers to those before
// it: each answer then comes before the expiry the one before it left, for
// any round trip up to two thirds of the TTL less a second. While etcd's
// round trip is under a quarter of a second, the client's answer comes
// first and moves the last send on, and keepAlive sends nothing (renewEvery).
//
// The client also keeps retrying a renewal that etcd refuses (a role without
// write permission on our key, auth turned on while the agent has no user)
// and tells its caller nothing until the TTL has run out. So keepAlive's own
// renewals are sent meanwhile, again reaskAfter after one failed, and a
// refusal is said loudly while the lease still lives.
//
// The expiry is judged by m.cfg.Clock, which goes on while the machine is
// suspended, as etcd's clock does; Go's timers do not. So the expiry is
// compared with that clock when it is due, and at least every lapseCheck:
// a host that slept past it asks etcd at once, and gives the lease up if
// etcd cannot say that it lives, rather than holding it for the rest of a
// TTL that ran out while it slept.
//
// Once the expiry has passed, a renewal that fails ends the lease: so
// etcd's unanswered renewals (its quorum lost, the link to it silent) end
// it at most renewalWait + leaderAskTimeout after its expiry, however long
// the TTL: the wait of a renewal sent before the expiry, or at it when none
// is waiting for its answer.
func (m *Manager) keepAlive(ctx context.Context) (lost string, err error) {
	kctx, cancel := context.WithCancel(ctx)
	// keepAlive's own renewals end with kctx, and are waited for.
	var renewals sync.WaitGroup
	defer func() {
		cancel()
		renewals.Wait()
	}()
	id := clientv3.LeaseID(m.own.LeaseID)
	var ka <-chan *clientv3.LeaseKeepAliveResponse
	if id != 0 {
		ka, err = m.reg.cli.KeepAlive(kctx, id)
		if err != nil {
			return "keepalive refused: " + err.Error(), nil
		}
	}
	// While a restore of our value keeps failing, retry fires for the next
	// attempt: no further change of our key need ever come to prompt one.
	// While the client has given a keepalive channel up, recheck fires for
	// the next look at the lease; while it holds one, due fires when a
	// renewal of keepAlive's own is to be sent.
	var (
		retry   <-chan time.Time
		b       = delay.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
		failing error
		recheck <-chan time.Time
		rb      = delay.Backoff{Min: 500 * time.Millisecond, Max: 5 * time.Second}
		unknown error
		// refused is etcd's last refusal to renew the lease, until it is
		// renewed again.
		refused error
		// reask is how long after a failed or refused renewal etcd is
		// asked again.
		reask = reaskAfter(m.cfg.TTL)
		// expires is when the lease ends unless renewed, as last known, by
		// now: a lease is granted just before keepAlive starts, so at first
		// it is at most a TTL away.
		now     = m.cfg.Clock
		expires = now().Add(m.cfg.TTL)
		// sent is when the latest renewal known to have gone out was sent,
		// by now: the grant at first, then the client's keepalive answered
		// last or one of keepAlive's own, whichever went later. ttl is the
		// lease's TTL as etcd last said it.
		sent = now()
		ttl  = m.cfg.TTL
		// reaskAt, once a renewal failed or was refused, is when the next
		// is sent, if that is sooner than renewEvery after sent.
		reaskAt time.Time
		// due fires when the next renewal of keepAlive's own is to be
		// sent; its answer comes on answered. inflight are sent and not
		// answered yet.
		due      <-chan time.Time
		dueT     *time.Timer
		answered = make(chan renewal)
		inflight int
		// lapse fires when expires is due, or lapseCheck from now if
		// that is sooner.
		lapse  <-chan time.Time
		lapseT *time.Timer
	)
	// wall is expires on the wall clock, for messages.
	wall := func() time.Time { return time.Now().Add(expires.Sub(now())) }
	unconfirmed := func(err error) string {
		return fmt.Sprintf("etcd lease %x went unconfirmed past its expiry (%s): %v", id, wall().Format(time.RFC3339), err)
	}
	rearm := func() {
		if lapseT != nil {
			lapseT.Reset(lapseIn(expires.Sub(now())))
		}
	}
	schedule := func() {
		if dueT == nil {
			return
		}
		at := sent.Add(renewEvery(ttl))
		if !reaskAt.IsZero() && reaskAt.Before(at) {
			at = reaskAt
		}
		dueT.Reset(max(at.Sub(now()), 0))
	}
	if id != 0 {
		dueT = time.NewTimer(renewEvery(m.cfg.TTL))
		defer dueT.Stop()
		due = dueT.C
		lapseT = time.NewTimer(lapseIn(m.cfg.TTL))
		defer lapseT.Stop()
		lapse = lapseT.C
	}
	m.cfg.OnLeaseState(true, "")
	defer func() {
		if refused == nil {
			return
		}
		if lost != "" {
			lost += "; etcd had refused to renew it: " + refused.Error()
		}
		m.cfg.OnRenewalRefused(nil, time.Time{})
	}()
	// renewed takes a renewal sent at from whose answer carried t: etcd
	// holds the lease at least until from+t. An answer that left less than
	// one before it (an earlier renewal answered later) takes nothing back.
	renewed := func(from time.Time, t time.Duration) {
		expires = later(expires, from.Add(t))
		sent, ttl, reaskAt = later(sent, from), t, time.Time{}
		schedule()
		rearm()
		if refused != nil {
			m.log.Info("etcd renews our lease again", "leaseID", id, "ttl", t)
			refused = nil
			m.cfg.OnRenewalRefused(nil, time.Time{})
		}
	}
	// send sends a renewal of keepAlive's own; its answer comes on
	// answered.
	send := func() {
		sent, reaskAt = later(sent, now()), time.Time{}
		schedule()
		inflight++
		renewals.Add(1)
		go func(id clientv3.LeaseID) {
			defer renewals.Done()
			r := m.renewOnce(kctx, id)
			select {
			case answered <- r:
			case <-kctx.Done():
			}
		}(id)
	}
	// failed takes a renewal of keepAlive's own that failed: it is sent
	// again reask from now.
	failed := func() {
		reaskAt = now().Add(reask)
		schedule()
	}
	refuse := func(err error) {
		if refused == nil || refused.Error() != err.Error() {
			m.log.Error(err, "ETCD REFUSES TO RENEW OUR LEASE; it is lost at its expiry unless that is fixed "+
				"(etcd renews a lease for a user who may write its key: check --etcd-username and its role)",
				"leaseID", id, "subnet", m.own.Subnet, "expires", wall().Format(time.RFC3339))
			m.cfg.OnRenewalRefused(err, wall())
		}
		refused = err
	}
	for {
		select {
		case <-ctx.Done():
			return "", nil
		case resp, ok := <-ka:
			if !ok {
				if ctx.Err() != nil {
					return "", nil
				}
				// recheck asks etcd now; due waits for its answer.
				ka = nil
				recheck = time.After(0)
				continue
			}
			m.log.V(4).Info("lease kept alive", "leaseID", resp.ID, "ttl", resp.TTL)
			renewed(m.keepAliveSent(resp.ID), time.Duration(resp.TTL)*time.Second)
			continue
		case <-due:
			if ka == nil {
				continue
			}
			send()
			continue
		case r := <-answered:
			inflight--
			if ctx.Err() != nil {
				return "", nil
			}
			if id == 0 {
				continue // a reservation now: nothing to renew
			}
			m.reportRenewal(id, r)
			switch {
			case r.err == nil && r.ttl > 0 && ka == nil:
				if ka, err = m.reg.cli.KeepAlive(kctx, id); err != nil {
					return "keepalive refused: " + err.Error(), nil
				}
				m.log.Info("etcd answered no keepalive in time but our etcd lease lives; keeping it alive again",
					"leaseID", id, "ttl", r.ttl, "unanswered", unknown)
				unknown, recheck = nil, nil
				rb.Reset()
				renewed(r.sent, r.ttl)
			case r.err == nil && r.ttl > 0 && !now().Before(expires):
				// etcd slept too (on the same machine), a new leader
				// gave the lease a full TTL again, or etcd's answers
				// take longer than the TTL less renewEvery.
				m.log.Info("our etcd lease's last known expiry passed (the machine slept, or etcd answers slowly), but etcd renewed it",
					"leaseID", id, "ttl", r.ttl)
				renewed(r.sent, r.ttl)
			case r.err == nil && r.ttl > 0:
				m.log.V(2).Info("a renewal sent directly was answered", "leaseID", id, "ttl", r.ttl, "roundTrip", now().Sub(r.sent))
				renewed(r.sent, r.ttl)
			case r.err == nil:
				return fmt.Sprintf("etcd lease %x expired or was revoked", id), nil
			case !now().Before(expires):
				return unconfirmed(r.err), nil
			case refusal(r.err):
				refuse(r.err)
				if ka == nil {
					recheck = time.After(reask)
				} else {
					failed()
				}
			case ka == nil:
				if unknown == nil {
					m.log.Error(r.err, "cannot ask etcd about our lease; holding it until its last known expiry", "leaseID", id, "expires", wall())
				}
				unknown = r.err
				recheck = time.After(rb.Next())
			default:
				m.log.V(2).Info("a renewal sent directly failed", "leaseID", id, "err", r.err)
				failed()
			}
			continue
		case <-lapse:
			if now().Before(expires) {
				rearm()
				continue
			}
			// Past the expiry, the answer to a renewal decides: renewed
			// rearms lapse, a failure ends the lease. One sent before
			// is waited for.
			if inflight == 0 {
				send()
			}
			continue
		case <-recheck:
			// The client gave its keepalive up: the answer to a renewal
			// says whether to keep the lease alive again, or to ask
			// again later. One sent before is waited for.
			recheck = nil
			if inflight == 0 {
				send()
			}
			continue
		case <-m.ownChanged:
		case <-retry:
		}
		retry = nil
		lost, err := m.checkOwn(ctx, failing == nil)
		if id != 0 && m.own.Reservation() {
			// Made a reservation: nothing left to keep alive.
			cancel()
			lapseT.Stop()
			dueT.Stop()
			ka, recheck, due, dueT, lapse, lapseT, id = nil, nil, nil, nil, nil, nil, 0
		}
		switch {
		case lost != "":
			return lost, nil
		case err == nil:
			failing = nil
			b.Reset()
		case ctx.Err() != nil:
			return "", nil
		default:
			if failing == nil || failing.Error() != err.Error() {
				m.log.Error(err, "writing our lease value back failed; retrying", "subnet", m.own.Subnet)
			}
			failing = err
			retry = time.After(b.Next())
		}
	}
}

// later returns the later of a and b.
func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// lapseCheck is how often, at least, keepAlive compares the lease's last
// known expiry with a clock that goes on during suspend: how late a host
// that slept past it notices.
const lapseCheck = 5 * time.Second

// lapseIn is how long keepAlive waits to compare the lease's last known
// expiry, left away, with that clock: until the expiry (Go's timers stand
// still while the machine sleeps), at most lapseCheck.
func lapseIn(left time.Duration) time.Duration { return min(max(left, 0), lapseCheck) }

// renewalWait is how long renewOnce waits for etcd's answer to a renewal of
// an etcd lease of TTL ttl: at most lookupTimeout, and no longer than two
// thirds of the TTL (at least leaderAskTimeout), since an etcd whose answers
// take that long cannot keep the lease alive: each renewal is sent a third
// of the TTL after the last (renewEvery), and its answer would come after
// the end that one left.
func renewalWait(ttl time.Duration) time.Duration {
	return min(lookupTimeout, max(2*ttl/3, leaderAskTimeout))
}

// keepAliveSent is when the etcd client's keepalive of lease id whose
// answer came last was sent (ManagerConfig.KeepAliveSent), or now when that
// is not known or not before now.
func (m *Manager) keepAliveSent(id clientv3.LeaseID) time.Time {
	now := m.cfg.Clock()
	if m.cfg.KeepAliveSent == nil {
		return now
	}
	if sent, ok := m.cfg.KeepAliveSent(int64(id)); ok && sent.Before(now) {
		return sent
	}
	return now
}

// renewEvery is how long after the last renewal of an etcd lease of TTL ttl
// was sent keepAlive sends one of its own: a third of the TTL, as the etcd
// client does, and a second more. The client sends its next keepalive a
// third of the TTL after an answer, up to half a second late (it looks for
// keepalives to send every 500 ms), and its answer comes a round trip
// later: after two round trips and that delay from the last send. Under a
// quarter of a second each, that is within the second, the last send has
// moved on, and keepAlive sends nothing; at 0.4 s (200 ms each way) some of
// its own go out (3.6 renewals per 10 s TTL against 3.0).
func renewEvery(ttl time.Duration) time.Duration { return ttl/3 + time.Second }

// renewalDue is how long after a keepalive answer carrying ttl agentd
// before 2026-12-07 sent a renewal of its own: a third of the TTL, a sixth
// more (at most 30 s), and a second. It is longer than renewEvery, so
// UnrenewedAtMost, counted with it, holds for such an agentd still running
// too.
func renewalDue(ttl time.Duration) time.Duration {
	return ttl/3 + min(ttl/6, 30*time.Second) + time.Second
}

// reaskAfter is how long keepAlive waits before it asks etcd again to
// renew an etcd lease of TTL ttl, after a direct renewal failed or was
// refused.
func reaskAfter(ttl time.Duration) time.Duration { return min(max(ttl/6, time.Second), time.Minute) }

// UnrenewedAtMost is the longest a running agentd that reaches etcd leaves
// its etcd lease of TTL ttl unrenewed: a renewal is sent renewEvery (at
// most renewalDue) after the last, and once more reaskAfter later. An etcd
// lease left unrenewed longer is kept alive by no agentd that reaches etcd
// (agentd --release-lease relies on it for this host's leases at another
// public IP); flanneld, which writes its key on a new etcd lease once in
// 23 h, is not such an agent.
func UnrenewedAtMost(ttl time.Duration) time.Duration { return renewalDue(ttl) + reaskAfter(ttl) }

// renewal is etcd's answer to a renewal renewOnce sent.
type renewal struct {
	// sent is when the keepalive answered was sent, by Clock: etcd counts
	// the TTL from when it reached etcd, so sent is the last moment known
	// to be before that, and the lease lives at least until sent+ttl.
	sent time.Time
	// ttl is the TTL etcd's answer carried, 0 or less when the lease is
	// gone; err is why there is no answer.
	ttl time.Duration
	err error
}

// reportRenewal reports etcd's answer r about lease id to OnLeaseRenewed
// (the stream renewOnce sends on bypasses the client's Lease): the time it
// left, counted from its send, so an answer that took a second to come back
// leaves a second less than the TTL it carries; at least a nanosecond while
// the lease lives, as etcd said, however late the answer came.
func (m *Manager) reportRenewal(id clientv3.LeaseID, r renewal) {
	if r.err != nil {
		return
	}
	left := r.ttl
	if left > 0 {
		// At most the TTL: a clock that went backwards adds nothing.
		left = max(left-max(m.cfg.Clock().Sub(r.sent), 0), time.Nanosecond)
	}
	m.cfg.OnLeaseRenewed(int64(id), left)
}

// renewOnce sends one keepalive for id on a stream of its own and returns
// etcd's answer. It tries once, unlike the client's KeepAliveOnce, which
// retries at once, without a pause, while etcd is unavailable.
//
// A member without a leader (its cluster lost its quorum, or it is cut off
// from the others) holds a renewal until a leader can answer it, which may
// be a moment away (an election), so renewOnce waits for it (renewalWait);
// when the wait runs out it asks once more, requiring a leader, which such a
// member refuses at once: the error then says that etcd has no leader, the
// cause an operator can act on, rather than that the wait ran out.
func (m *Manager) renewOnce(ctx context.Context, id clientv3.LeaseID) renewal {
	sent := m.cfg.Clock()
	resp, err := m.keepAliveOnce(ctx, id, renewalWait(m.cfg.TTL))
	if status.Code(err) == codes.DeadlineExceeded && ctx.Err() == nil {
		again := m.cfg.Clock()
		r, aerr := m.keepAliveOnce(clientv3.WithRequireLeader(ctx), id, leaderAskTimeout)
		switch {
		case aerr == nil:
			resp, err, sent = r, nil, again
		case errors.Is(rpctypes.Error(aerr), rpctypes.ErrNoLeader):
			return renewal{err: fmt.Errorf("renew etcd lease %x: %s: %w", id, noLeaderExplained, rpctypes.Error(aerr))}
		}
	}
	if err != nil {
		return renewal{err: fmt.Errorf("renew etcd lease %x: %w", id, rpctypes.Error(err))}
	}
	return renewal{sent: sent, ttl: time.Duration(resp.TTL) * time.Second}
}

// noLeaderExplained is what renewOnce says when etcd refuses a renewal for
// want of a leader.
const noLeaderExplained = "etcd has no leader: the member answering reaches too few of its cluster's members (most are down, or it is cut off from them) and renews no lease until it has one"

// leaderAskTimeout is how long renewOnce waits for the answer to its
// renewal that requires a leader: a member without one refuses it at once.
const leaderAskTimeout = time.Second

// keepAliveOnce sends one keepalive for id on a stream of its own and
// returns etcd's answer, waiting for it up to timeout.
func (m *Manager) keepAliveOnce(ctx context.Context, id clientv3.LeaseID, timeout time.Duration) (*etcdserverpb.LeaseKeepAliveResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	stream, err := etcdserverpb.NewLeaseClient(m.reg.cli.ActiveConnection()).LeaseKeepAlive(ctx)
	if err != nil {
		return nil, err
	}
	// A stream that failed says why at Recv.
	if err = stream.Send(&etcdserverpb.LeaseKeepAliveRequest{ID: int64(id)}); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return stream.Recv()
}

// refusal reports whether err is etcd refusing a request for want of
// permission or authentication, rather than etcd not answering (that is
// reported where the connection is watched) or a member that cannot serve
// it now (a leader election).
func refusal(err error) bool {
	var ee rpctypes.EtcdError
	if !errors.As(err, &ee) {
		return false
	}
	switch ee.Code() {
	case codes.PermissionDenied, codes.Unauthenticated, codes.InvalidArgument:
		return true
	}
	return false
}

// checkOwn compares what the watch last saw of our key with our lease. It
// returns why the lease is lost, if it is, or the error of a restore that
// failed and is to be retried. first is false on such a retry.
func (m *Manager) checkOwn(ctx context.Context, first bool) (lost string, err error) {
	st, rewound := m.takeOwnState()
	if rewound {
		// etcd's history was replaced: our revisions belong to the old
		// one, and an absent key would look no newer than our last write.
		// Only our key as we wrote it, on our etcd lease, is still ours.
		if st.present && st.err == nil && st.lease.Attrs.Equal(m.attrs) && st.lease.LeaseID == m.own.LeaseID {
			m.own.ModRevision, m.own.CreateRevision = st.lease.ModRevision, st.createRev
			m.setOwn(m.own)
			return "", nil
		}
		return "etcd lost its history (its revision went backwards, or its keys differ from what the watch had seen); our lease key is not there as we wrote it", nil
	}
	if st.rev <= m.own.ModRevision {
		return "", nil // no newer than our own last write
	}
	switch {
	case !st.present:
		return "our lease key was deleted", nil
	case st.err == nil && st.lease.Attrs.Equal(m.attrs) && st.lease.LeaseID == m.own.LeaseID:
		m.own.ModRevision = st.lease.ModRevision
		m.setOwn(m.own)
		return "", nil
	case st.err == nil && m.byTwin(st.lease):
		// Not written back: reacquire finds the key so and says why.
		return "our lease key was taken over by another agentd with our host identity", nil
	case st.err == nil && st.lease.Reservation() && m.ours(st.lease):
		return "", m.reserve(ctx, st.lease)
	case st.createRev != m.own.CreateRevision && st.err == nil:
		// A recreated key with an unusable value falls through to
		// restore, as an overwrite in place does: it names nobody, and bad
		// input never takes the node down.
		return "our lease key was recreated by another writer", nil
	case st.err == nil && m.namesOtherHost(st.lease.Attrs):
		return fmt.Sprintf("our lease key was overwritten by host %q (%s)", clip.String(st.lease.Attrs.HostID), st.lease.Attrs.PublicIP), nil
	}
	err = m.restore(ctx, st, first)
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// Retrying cannot help; our keepalive may not notice for hours.
		return fmt.Sprintf("etcd lease %x is gone (revoked, or expired during an outage)", m.own.LeaseID), nil
	}
	return "", err
}

// restore writes our value back over a foreign write to our key, seen as st,
// if the key is still as st saw it: an overwrite in place, or a recreation
// with an unusable value.
func (m *Manager) restore(ctx context.Context, st ownState, first bool) error {
	if first {
		what := "a value of another host"
		if st.err != nil {
			what = "an unusable value (" + st.err.Error() + ")"
		}
		m.log.Error(nil, "our lease key was overwritten; writing our value back", "subnet", m.own.Subnet, "found", what)
	}
	cur := m.own
	cur.ModRevision, cur.CreateRevision = st.rev, st.createRev
	l, ok, err := m.reg.Replace(ctx, cur, m.attrs, m.own.LeaseID)
	if err != nil {
		return err
	}
	if !ok {
		// Written again since: the watch brings the newer value, and the
		// retry reads it.
		return fmt.Errorf("lease %s was written again after revision %d",
			m.reg.LeaseKey(m.own.Subnet, m.own.IPv6Subnet), st.rev)
	}
	m.setOwn(l)
	m.Stats.Reacquired.Add(1)
	m.log.Info("own lease value restored", "subnet", l.Subnet)
	return nil
}

// reserve makes l, our key written over as a reservation for our public IP
// (by an operator, see README's "Reserve a subnet"), our reservation: our
// value written back without an etcd lease, as Acquire does with a
// reservation it finds, and the etcd lease that held the key revoked.
func (m *Manager) reserve(ctx context.Context, l Lease) error {
	key := m.reg.LeaseKey(l.Subnet, l.IPv6Subnet)
	nl, ok, err := m.takeOver(ctx, l, true, nil)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("lease %s was written again after revision %d", key, l.ModRevision)
	}
	prev := m.own.LeaseID
	m.setOwn(nl)
	if prev != 0 {
		m.revoke(ctx, prev)
	}
	m.log.Info("our lease key was made a reservation for our public IP; holding it without an etcd lease", "subnet", nl.Subnet, "key", key)
	return nil
}

// overlapFree returns an error wrapping ErrLeaseLost if another host's key
// holds a subnet overlapping ours (10.244.4.0/23 over our 10.244.5.0/24,
// say): then recreating our key would route the same addresses to two
// hosts. So does a key agentd skips but flanneld reads as a lease
// ("10.244.5.0-024", FlanneldLeaseError), and a lease key whose value only
// flanneld decodes ({"PublicIP":…,"HostID":7}): flanneld hosts route its
// subnet to its PublicIP, unless that is ours (flanneldHeld). A key with a
// value neither peers nor flanneld read is skipped, as they skip it, and
// Acquire does not lease around it either (eachHeld).
//
// The check and the create that follows are not one transaction: a key
// created in between (an etcd round trip) escapes it, as in Acquire between
// its list and its create. Closing the gap in the create's Txn would take a
// compare over the whole subnets prefix (no narrower key range holds every
// key that can overlap ours: a dual-stack key's IPv6 half follows its IPv4
// one). etcd evaluates such a compare by reading every lease, values
// included, in its serial apply loop, and any key created meanwhile fails
// it; after etcd lost its data every host recreates its key at once, and
// such creates would fail one another and serialize the cluster's recovery.
func (m *Manager) overlapFree(ctx context.Context) error {
	leases, bad, err := m.reg.Overlapping(ctx, m.own.Subnet, m.own.IPv6Subnet)
	if err != nil {
		return err
	}
	for _, b := range bad {
		if fe, ok := m.flanneldHeld(b.Err); ok {
			return m.lostTo(fmt.Sprintf("key %s, which agentd skips but flanneld reads as a lease of %s (%s), overlaps our subnet %s",
				clip.String(b.Key), fe.HeldSubnets(), fe.Routing("its hosts route that to the key's PublicIP "+fe.PublicIP.String()), m.own.Subnet), "that key")
		}
	}
	for _, b := range bad {
		var fe *FlanneldLeaseError
		if errors.As(b.Err, &fe) {
			m.log.Info("a key agentd skips but flanneld reads as a lease of this host's public IP overlaps our subnet; recreating ours: flanneld hosts route both here",
				"subnet", m.own.Subnet, "key", b.Key, "flanneldReadsAsLeaseOf", fe.HeldSubnets())
			continue
		}
		m.log.Error(b.Err, "a key with an unusable value overlaps our subnet; recreating ours all the same, peers skip it",
			"subnet", m.own.Subnet, "key", b.Key)
	}
	for _, l := range leases {
		if m.validLease(l) != nil || l.Attrs.PublicIP == m.cfg.PublicIP && !m.namesOtherHost(l.Attrs) {
			continue // not a peer's route, or this host's own
		}
		return m.lostTo(fmt.Sprintf("key %s of %s (host %q) overlaps our subnet %s",
			m.reg.LeaseKey(l.Subnet, l.IPv6Subnet), l.Attrs.PublicIP, clip.String(l.Attrs.HostID), m.own.Subnet), "that key")
	}
	return nil
}

// lostTo is the ErrLeaseLost error for another host holding what our subnet
// needs (why), and what to do: free that key (which) to keep the subnet.
func (m *Manager) lostTo(why, which string) error {
	return fmt.Errorf("%w: %s; agentd stops rather than move this host's containers off %s while it runs: "+
		"to keep the subnet, free %s, then restart; restarted while it is held, agentd leases another subnet "+
		"(MOVING TO ANOTHER SUBNET), so drain this node first", ErrLeaseLost, why, m.own.Subnet, which)
}

// reacquire gets our subnet back, retrying while etcd is unreachable.
func (m *Manager) reacquire(ctx context.Context) error {
	b := delay.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	var failing error
	for {
		err := m.reacquireOnce(ctx)
		if err == nil {
			m.log.Info("own lease recreated with the same subnet", "subnet", m.own.Subnet, "leaseID", m.own.LeaseID)
			return nil
		}
		if errors.Is(err, ErrLeaseLost) || ctx.Err() != nil {
			return err
		}
		if failing == nil || failing.Error() != err.Error() {
			m.log.Error(err, "recreating own lease failed; retrying", "subnet", m.own.Subnet)
		}
		failing = err
		if err := delay.Sleep(ctx, b.Next()); err != nil {
			return err
		}
	}
}

func (m *Manager) reacquireOnce(ctx context.Context) error {
	g := &grant{m: m}
	defer g.release(ctx)
	cur, exists, gerr := m.reg.Get(ctx, m.own.Subnet, m.own.IPv6Subnet)
	if gerr != nil && !exists {
		return gerr
	}
	key := m.reg.LeaseKey(m.own.Subnet, m.own.IPv6Subnet)
	var (
		l   Lease
		ok  bool
		err error
	)
	// A reservation for our public IP naming no other host is ours, as
	// Acquire finds it, even when written after a delete.
	reserved := gerr == nil && cur.Reservation() && m.ours(cur)
	switch {
	case !exists:
		if err := m.overlapFree(ctx); err != nil {
			return err
		}
		var id int64
		if id, err = g.id(ctx); err != nil {
			return err
		}
		l, ok, err = m.reg.Create(ctx, m.own.Subnet, m.own.IPv6Subnet, m.attrs, id)
		if err != nil {
			l, ok, err = g.settle(ctx, m.own.Subnet, m.own.IPv6Subnet, err)
		}
		if ok {
			g.keep()
		}
	case gerr != nil:
		// There, with a value that names nobody (an operator's typo, say):
		// taken over as checkOwn's restore does, bad input never taking
		// the node down.
		m.log.Error(nil, "our lease key was overwritten; writing our value back", "subnet", m.own.Subnet,
			"found", "an unusable value ("+gerr.Error()+")")
		l, ok, err = m.takeOver(ctx, cur, m.own.Reservation(), g)
	case gerr == nil && m.byTwin(cur):
		return m.twinErr(cur)
	case reserved,
		gerr == nil && cur.Attrs.PublicIP == m.cfg.PublicIP && cur.Attrs.HostID == m.cfg.HostID,
		gerr == nil && cur.Attrs.HostID != "" && cur.Attrs.HostID == m.cfg.PreviousHostID && m.ours(cur),
		cur.CreateRevision == m.own.CreateRevision && !m.namesOtherHost(cur.Attrs):
		// Our reservation, still our key (its etcd lease may have
		// outlived our keepalive), our key as this host wrote it under
		// the identity its subnet.env named at the start (etcd restored
		// from a backup taken before a start that lost the state dir:
		// Acquire took that value as ours then), or overwritten in place
		// by a value that names no other host: take it over, with a fresh
		// etcd lease unless it is a reservation.
		l, ok, err = m.takeOver(ctx, cur, reserved || m.own.Reservation(), g)
	default:
		return m.lostTo(fmt.Sprintf("key %s now belongs to %s (host %q)", key, cur.Attrs.PublicIP, clip.String(cur.Attrs.HostID)), "the key")
	}
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("lease %s changed while recreating it", key)
	}
	prev := m.own.LeaseID
	m.setOwn(l)
	if prev != 0 && prev != l.LeaseID {
		// The key left the old etcd lease (deleted, or moved by takeOver):
		// revoke it so that no lease object outlives its key.
		m.revoke(ctx, prev)
	}
	return nil
}
