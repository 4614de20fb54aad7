package main

import (
	"bytes"
	"fmt"
	"strconv"

	"github.com/go-logr/logr"
)

// logSafe is log with every text value (a string, an error, a
// fmt.Stringer, and the error of log.Error) written on one line, quoted as
// Go quotes it (strconv.Quote: \n, \x1b, \u009b, \u202e, \u2028).
//
// klog's text format quotes such a value so unless it holds a newline:
// then it writes the value's lines as they are, each after a tab, between
// key=< and " >" (kubernetes/klog#291); it has no option to do otherwise.
// agentd logs what others wrote in etcd: a key's name (skipping key that
// is not a usable lease), a lease's host ID and backend type, errors
// quoting them. With a newline in such a text, an escape sequence, a C1
// control or a bidirectional control such as U+202E in it went to the
// journal, and to the terminal of whoever reads it, as it is, and its lines
// could pass for agentd's own. A value without a newline is written as
// klog writes it.
//
// Written by hand: klog has no hook for its text values. It relies on
// klog writing a value that has a WriteText(*bytes.Buffer) method (as its
// own ObjectRef has) with that method; TestLogQuotesTextFromEtcd checks
// the output through klog.
func logSafe(log logr.Logger) logr.Logger {
	sink := log.GetSink()
	if cd, ok := sink.(logr.CallDepthLogSink); ok {
		// safeSink's own frame, for the caller klog names.
		sink = cd.WithCallDepth(1)
	}
	return logr.New(safeSink{sink})
}

// safeSink hands its sink each text value as a quotedText.
type safeSink struct{ sink logr.LogSink }

var _ logr.CallDepthLogSink = safeSink{}

// Init does nothing: the sink was set up by the logger it came from.
func (s safeSink) Init(logr.RuntimeInfo) {}

func (s safeSink) Enabled(level int) bool { return s.sink.Enabled(level) }

func (s safeSink) Info(level int, msg string, kvs ...any) {
	s.sink.Info(level, msg, quoteValues(kvs)...)
}

func (s safeSink) Error(err error, msg string, kvs ...any) {
	if err != nil {
		err = quotedError{err}
	}
	s.sink.Error(err, msg, quoteValues(kvs)...)
}

func (s safeSink) WithValues(kvs ...any) logr.LogSink {
	return safeSink{s.sink.WithValues(quoteValues(kvs)...)}
}

func (s safeSink) WithName(name string) logr.LogSink { return safeSink{s.sink.WithName(name)} }

func (s safeSink) WithCallDepth(depth int) logr.LogSink {
	if cd, ok := s.sink.(logr.CallDepthLogSink); ok {
		return safeSink{cd.WithCallDepth(depth)}
	}
	return s
}

// quoteValues is kvs, keys and values, with each text value written by
// quotedText. A value that writes itself (klog's ObjectRef) stays as it
// is, as do others (numbers, addresses, slices: klog writes these as
// JSON).
func quoteValues(kvs []any) []any {
	out := make([]any, len(kvs))
	for i, v := range kvs {
		if i%2 == 1 {
			switch v := v.(type) {
			case interface{ WriteText(*bytes.Buffer) }:
			case fmt.Stringer:
				out[i] = quotedText(v.String)
				continue
			case string:
				out[i] = quotedText(func() string { return v })
				continue
			case error:
				out[i] = quotedText(v.Error)
				continue
			}
		}
		out[i] = v
	}
	return out
}

// quotedText is a text, got when the line is written, that klog writes
// quoted (WriteText): as it writes a text without a newline, and as it
// does for one whose method panics.
type quotedText func() string

func (q quotedText) WriteText(b *bytes.Buffer) {
	b.WriteString(strconv.Quote(q.text()))
}

func (q quotedText) text() (s string) {
	defer func() {
		if r := recover(); r != nil {
			s = fmt.Sprintf("<panic: %s>", r)
		}
	}()
	return q()
}

// quotedError is the error of log.Error, written by quotedText; errors.Is
// and errors.As see err through it.
type quotedError struct{ err error }

func (e quotedError) Error() string             { return e.err.Error() }
func (e quotedError) Unwrap() error             { return e.err }
func (e quotedError) WriteText(b *bytes.Buffer) { quotedText(e.err.Error).WriteText(b) }
