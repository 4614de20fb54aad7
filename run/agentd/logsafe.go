package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/agentd/agentd/internal/termsafe"
	"github.com/go-logr/logr"
	"k8s.io/klog/v2"
)

// logSafe is log with each text value (a string, an error, a fmt.Stringer,
// and the error of log.Error) that holds a newline escaped as Go quotes
// it but for its newlines: a control character (\x1b, \u009b, \t, \r), a
// format character (\u202e, \u200b), U+2028, U+2029 and the rest that
// strconv.IsPrint refuses, and a byte that is not UTF-8 as \x9b.
//
// klog's text format quotes such a value as strconv.Quote does unless it
// holds a newline: then it writes the value's lines as they are, each after
// a tab, between key=< and " >" (kubernetes/klog#291), with no option to do
// otherwise. agentd logs what anyone with write access to etcd writes: a
// key's name (skipping key that is not a usable lease), a lease's host ID
// and backend type, errors quoting them. With a newline in such a text, an
// escape sequence, a C1 control or U+202E in it went to the journal, and to
// the terminal of whoever reads it, as they are. klog still writes the
// escaped text on lines of its own, each after a tab (a pass's failure
// joins one line per failed kernel change), and a text without a newline
// as before.
func logSafe(log logr.Logger) logr.Logger {
	sink := log.GetSink()
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		// safeSink's own frame, for the caller klog names.
		sink = cd.WithCallDepth(1)
	}
	return logr.New(safeSink{sink})
}

// withSafeLog returns ctx carrying logSafe(klog.Background()), the logger
// agent.Run and its parts take from their context (klog.FromContext), and
// run too, for agent.Run's failure.
func withSafeLog(ctx context.Context) context.Context {
	return klog.NewContext(ctx, logSafe(klog.Background()))
}

// safeSink hands its sink each text value through escapeLines.
type safeSink struct{ sink logr.LogSink }

var _ logr.CallDepthLogSink = safeSink{}

// Init does nothing: the sink was set up by the logger it came from.
func (s safeSink) Init(logr.RuntimeInfo) {}

func (s safeSink) Enabled(level int) bool { return s.sink.Enabled(level) }

func (s safeSink) Info(level int, msg string, kvs ...any) {
	s.sink.Info(level, msg, escapeValues(kvs)...)
}

func (s safeSink) Error(err error, msg string, kvs ...any) {
	if err != nil {
		if text, ok := textOf(err.Error); ok {
			if e := escapeLines(text); e != text {
				err = escapedError{err, e}
			}
		}
	}
	s.sink.Error(err, msg, escapeValues(kvs)...)
}

func (s safeSink) WithValues(kvs ...any) logr.LogSink {
	return safeSink{s.sink.WithValues(escapeValues(kvs)...)}
}

func (s safeSink) WithName(name string) logr.LogSink { return safeSink{s.sink.WithName(name)} }

func (s safeSink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := s.sink.(logr.CallDepthLogSink); ok {
		return safeSink{cd.WithCallDepth(depth)}
	}
	return s
}

// escapeValues is kvs, keys and values, with each text value that holds a
// newline and something to escape replaced by its text through
// escapeLines, which klog writes as it writes the text of a string, error
// or Stringer (in that order it asks: Stringer, string, error). Other
// values stay as they are: klog writes numbers, addresses and the like,
// and slices and structs as JSON.
func escapeValues(kvs []any) []any {
	var out []any
	for i := 1; i < len(kvs); i += 2 {
		var text string
		var ok bool
		switch v := kvs[i].(type) {
		case interface{ WriteText(*bytes.Buffer) }:
		case fmt.Stringer:
			text, ok = textOf(v.String)
		case string:
			text, ok = v, true
		case error:
			text, ok = textOf(v.Error)
		}
		if !ok {
			continue
		}
		if e := escapeLines(text); e != text {
			if out == nil {
				out = slices.Clone(kvs)
			}
			out[i] = e
		}
	}
	if out == nil {
		return kvs
	}
	return out
}

// textOf is what f returns, unless it panics: klog then says so itself.
func textOf(f func() string) (s string, ok bool) {
	defer func() {
		if recover() != nil {
			s, ok = "", false
		}
	}()
	return f(), true
}

// escapeLines is s, if it holds a newline, with every rune but the
// newlines that strconv.IsPrint refuses escaped as Go quotes it, and every
// byte that is not UTF-8 as \xXX (termsafe.Lines); s itself otherwise
// (klog quotes it).
func escapeLines(s string) string {
	if !strings.Contains(s, "\n") {
		return s
	}
	return termsafe.Lines(s)
}

// escapedError is the error of log.Error with its text escaped by
// escapeLines; errors.Is and errors.As see err through it.
type escapedError struct {
	err  error
	text string
}

func (e escapedError) Error() string { return e.text }
func (e escapedError) Unwrap() error { return e.err }
