package lograte

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := New(3, time.Minute, func() time.Time { return now })
	want := []Verdict{Log, Log, Last, Quiet, Quiet}
	for i, w := range want {
		if got := l.Next(); got != w {
			t.Fatalf("line %d: %v, want %v", i, got, w)
		}
	}
	if got := l.Until(); !got.Equal(now.Add(time.Minute)) {
		t.Errorf("Until %v, want %v", got, now.Add(time.Minute))
	}
	now = now.Add(59 * time.Second)
	if got := l.Next(); got != Quiet {
		t.Errorf("within the window: %v, want Quiet", got)
	}
	now = now.Add(time.Second)
	for i, w := range want {
		if got := l.Next(); got != w {
			t.Fatalf("next window, line %d: %v, want %v", i, got, w)
		}
	}
}
