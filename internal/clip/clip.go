// Package clip bounds text that agentd quotes from what others wrote in
// etcd (a peer's BackendType, a key's name, an error quoting a lease value)
// before it goes into a log line or /status. etcd takes keys and values up
// to its request size limit (1.5 MB by default): quoted in full, one such
// write would make a line of that size in the journal on every write, and
// in every /status answer.
package clip

import "unicode/utf8"

// Len is how long such a text is at most, in bytes: more than any key or
// field a host writes for itself, and the start of anything longer.
const Len = 300

// String cuts s to at most Len bytes, on a character boundary, ending it
// with "…" when it cuts.
func String(s string) string { return Cut(s, Len) }

// Cut cuts s to at most n bytes (n ≥ 3), on a character boundary, ending it
// with "…" when it cuts: for texts that may be longer than Len, such as a
// reason that quotes one of them beside advice of its own.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Error returns err with its text cut by String; errors.Is and errors.As
// see err through it. It returns err itself when its text is short enough.
func Error(err error) error { return CutError(err, Len) }

// CutError is Error for texts of at most n bytes (Cut).
func CutError(err error, n int) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if len(msg) <= n {
		return err
	}
	return &clipped{msg: Cut(msg, n), err: err}
}

type clipped struct {
	msg string
	err error
}

func (e *clipped) Error() string { return e.msg }
func (e *clipped) Unwrap() error { return e.err }
