package subnet

import (
	"context"
	"time"

	"github.com/agentd/agentd/internal/delay"
)

// backoff and sleepCtx are delay.Backoff and delay.Sleep under the names
// watch.go still uses. watch.go is being reworked separately; once it uses
// package delay itself, this file goes.
type backoff struct {
	min, max time.Duration
	b        delay.Backoff
}

func (b *backoff) next() time.Duration {
	b.b.Min, b.b.Max = b.min, b.max
	return b.b.Next()
}

func (b *backoff) reset() { b.b.Reset() }

func sleepCtx(ctx context.Context, d time.Duration) error { return delay.Sleep(ctx, d) }
