package cluster

import (
	"context"
	"fmt"
	"time"
)

// Eventually calls cond until it returns nil, for at most timeout (and no
// longer than ctx lives), and returns nil as soon as it does. Otherwise it
// returns an error wrapping cond's last error, so a failing test says what was
// still wrong. cond is called at once, then with a growing pause (10 ms up to
// 100 ms) between calls; it should itself be quick or honour ctx.
func Eventually(ctx context.Context, timeout time.Duration, cond func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	pause := 10 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	<-t.C
	for {
		err := cond()
		if err == nil {
			return nil
		}
		t.Reset(pause)
		select {
		case <-ctx.Done():
			return fmt.Errorf("still failing after %v: %w", time.Since(start).Round(time.Millisecond), err)
		case <-t.C:
		}
		pause = min(pause*3/2, 100*time.Millisecond)
	}
}
