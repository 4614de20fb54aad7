package delay

import (
	"context"
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	// Nominal delays: doubling from Min, held at Max; each drawn delay lies
	// in [nominal/2, nominal].
	nominal := []time.Duration{100, 200, 400, 800, 1000, 1000}
	for round := range 2 {
		for i, n := range nominal {
			n *= time.Millisecond
			for range 50 {
				c := b
				if d := c.Next(); d < n/2 || d > n {
					t.Fatalf("round %d, attempt %d: delay %v, want within [%v, %v]", round, i+1, d, n/2, n)
				}
			}
			b.Next()
		}
		b.Reset()
	}
}

func TestSleep(t *testing.T) {
	start := time.Now()
	if err := Sleep(context.Background(), time.Millisecond); err != nil {
		t.Errorf("Sleep: %v", err)
	}
	if d := time.Since(start); d < time.Millisecond {
		t.Errorf("Sleep(1ms) returned after %v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start = time.Now()
	if err := Sleep(ctx, time.Hour); err != context.Canceled {
		t.Errorf("Sleep with a cancelled context: %v, want context.Canceled", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Sleep with a cancelled context took %v", d)
	}
}

// TestSleepOrWake: a signal on wake ends the sleep at once, saying so; the
// timer's end and the context's say it was not woken.
func TestSleepOrWake(t *testing.T) {
	wake := make(chan struct{}, 1)
	wake <- struct{}{}
	if woken, err := SleepOrWake(context.Background(), time.Hour, wake); !woken || err != nil {
		t.Errorf("SleepOrWake with a signal waiting = %v, %v; want true, nil", woken, err)
	}
	if woken, err := SleepOrWake(context.Background(), time.Millisecond, wake); woken || err != nil {
		t.Errorf("SleepOrWake(1ms) without a signal = %v, %v; want false, nil", woken, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if woken, err := SleepOrWake(ctx, time.Hour, nil); woken || err != context.Canceled {
		t.Errorf("SleepOrWake with a cancelled context = %v, %v; want false, context.Canceled", woken, err)
	}
}
