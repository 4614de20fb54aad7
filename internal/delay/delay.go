// Package delay is the retry backoff shared by the agent, the lease manager
// and the backends (doubling from a minimum to a maximum, with jitter), and
// a sleep that ends early with its context, or at a wake-up.
package delay

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff doubles a retry delay from Min up to Max. Each delay is drawn
// uniformly from [d/2, d], where d is the nominal delay, so that agents
// failing together (an etcd outage ends for every host at once) do not retry
// in step. Use it from one goroutine; the zero Backoff is not useful, set Min
// and Max (0 < Min <= Max).
type Backoff struct {
	Min, Max time.Duration
	cur      time.Duration // the nominal delay Next returned last; 0 before
}

// Next returns the delay before the next attempt.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.Min
	} else {
		b.cur = min(2*b.cur, b.Max)
	}
	return b.cur/2 + rand.N(b.cur/2+1)
}

// Reset starts again from Min, after an attempt succeeded.
func (b *Backoff) Reset() { b.cur = 0 }

// Sleep waits for d and returns nil, or returns ctx.Err() as soon as ctx is
// done.
func Sleep(ctx context.Context, d time.Duration) error {
	_, err := SleepOrWake(ctx, d, nil)
	return err
}

// SleepOrWake is Sleep that also ends, with woken true, at a signal on wake
// (nil: never).
func SleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) (woken bool, err error) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, ctx.Err()
	case <-t.C:
		return false, nil
	case <-wake:
		return true, nil
	}
}
