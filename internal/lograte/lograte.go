// Package lograte bounds the log lines that the default verbosity (-v=0)
// gets from events whose number grows with the cluster: keys, peers, kernel
// changes. A journal of a thousand-node cluster must not fill with one line
// per peer or per event; the lines held back go to a higher verbosity, and
// the one line that starts holding back says so.
//
// It is not golang.org/x/time/rate: that token bucket refills continuously,
// so after a burst it lets a line through every window/burst, and no
// "the rest go to -v=2 until T" could be true; a fixed window makes it so.
package lograte

import "time"

// Verdict is how the next line is to be logged.
type Verdict int

const (
	// Log: at the default verbosity.
	Log Verdict = iota
	// Last: at the default verbosity, the last one before the window ends,
	// so the line says that the next ones go to a higher verbosity.
	Last
	// Quiet: at a higher verbosity only.
	Quiet
)

// Limiter lets at most Burst lines a Window through at the default
// verbosity. It is not safe for concurrent use: it belongs to the goroutine
// (or lock) that logs.
type Limiter struct {
	burst  int
	window time.Duration
	now    func() time.Time
	start  time.Time // of the current window
	n      int       // lines let through in it
}

// New returns a Limiter of burst lines every window, reading time from now
// (time.Now if nil).
func New(burst int, window time.Duration, now func() time.Time) *Limiter {
	if now == nil {
		now = time.Now
	}
	return &Limiter{burst: burst, window: window, now: now}
}

// Next judges the next line.
func (l *Limiter) Next() Verdict {
	if t := l.now(); t.Sub(l.start) >= l.window {
		l.start, l.n = t, 0
	}
	l.n++
	switch {
	case l.n < l.burst:
		return Log
	case l.n == l.burst:
		return Last
	}
	return Quiet
}

// Until is when the current window ends, after which lines are let through
// again.
func (l *Limiter) Until() time.Time { return l.start.Add(l.window) }
