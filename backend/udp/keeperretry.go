package udp

import (
	"time"

	"github.com/agentd/agentd/internal/delay"
)

// While there is no descriptor keeper (starting one failed: its name is
// held by another process, fork failed under memory pressure), the
// datapath works but an agent restart drops every packet in flight. So
// Reconcile tries again, spaced by keeperRetry:
//
//	keeper up ── start fails ──▶ no keeper: logged (Error), wake-up armed
//	    ▲                            │ woken when due; at a pass before
//	    │                            │ that, nothing (one clock read)
//	    │                            ▼
//	    └──── a try succeeds ◀── try (startKeeperIfFree): a failure
//	          (logged: after            doubles the wait, logged at V(2),
//	          how many, how long)       and at V(0) again once an hour
//
// The first try comes after about a second, which is what a passing cause
// needs (fork's EAGAIN or ENOMEM under memory pressure, an old keeper still
// exiting); the wait doubles to keeperRetryMax, one minute: a cause that
// lasts (a process squatting on the name) costs one bind and one extra
// Reconcile pass a minute, less than the resync ticker's, and a keeper is
// back at most a minute after the cause is gone. Restarts of the agent,
// which the keeper is for, are minutes apart at the least. (delay.Backoff
// draws each wait from its second half; hosts share nothing a try costs,
// so that spread is not needed here, nor harmful.)

const (
	keeperRetryMin = time.Second
	keeperRetryMax = time.Minute
	// keeperRemind is how often a spell without a keeper is logged at V(0)
	// again, besides its start and end.
	keeperRemind = time.Hour
)

// keeperRetry is a spell without a keeper, Reconcile's own. The zero value
// is none: a keeper runs, or (with no keeper) the next try is due at once.
type keeperRetry struct {
	backoff delay.Backoff
	since   time.Time // the spell's first failure
	next    time.Time // no try before
	tries   int       // starts that failed in the spell
	// died: the spell began with the death of a keeper, so a keeper
	// started in it replaces that one (agentd_udp_keeper_restarts_total).
	died   bool
	loudAt time.Time // when the spell was last logged at V(0)
}

// due reports whether a try is due at now.
func (r *keeperRetry) due(now time.Time) bool { return !now.Before(r.next) }

// failed records a start that failed at now; died says that it was to
// replace a keeper that died, if it begins the spell. It returns the wait
// before the next try, and whether to log the failure at V(0): the spell's
// first, then one every keeperRemind.
func (r *keeperRetry) failed(now time.Time, died bool) (wait time.Duration, loud bool) {
	if r.tries == 0 {
		*r = keeperRetry{backoff: delay.Backoff{Min: keeperRetryMin, Max: keeperRetryMax}, since: now, died: died}
	}
	r.tries++
	wait = r.backoff.Next()
	r.next = now.Add(wait)
	loud = r.tries == 1 || now.Sub(r.loudAt) >= keeperRemind
	if loud {
		r.loudAt = now
	}
	return wait, loud
}

// up ends the spell, if there is one: a keeper started at now. It returns
// how many starts had failed (0: there was no spell), for how long there
// was no keeper, and whether the spell began with a keeper's death.
func (r *keeperRetry) up(now time.Time) (tries int, down time.Duration, died bool) {
	if r.tries == 0 {
		return 0, 0, false
	}
	tries, down, died = r.tries, now.Sub(r.since), r.died
	*r = keeperRetry{}
	return tries, down, died
}
