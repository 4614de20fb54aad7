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
func String(s string) string {
	if len(s) <= Len {
		return s
	}
	cut := Len - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Error returns err with its text cut by String; errors.Is and errors.As
// see err through it. It returns err itself when its text is short enough.
func Error(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	if len(msg) <= Len {
		return err
	}
	return &clipped{msg: String(msg), err: err}
}

type clipped struct {
	msg string
	err error
}

func (e *clipped) Error() string { return e.msg }
func (e *clipped) Unwrap() error { return e.err }
