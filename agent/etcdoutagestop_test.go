package agent

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/connectivity"
)

// TestOutageReporterStopLogsNothing: the agent stops while the outage
// reporter, past the grace period, probes etcd or gives the connection its
// chance to come back (an attempt in flight, a backoff cut short). The stop
// ends the probe's dials and those waits, and the reporter logged what it
// had then as an outage: "etcd unreachable" with the canceled dial for its
// reason, or "an endpoint accepts connections, but the etcd client's
// connection is CONNECTING", a hung etcd to the README's reader, as the
// agent's last words. A stop is no finding about etcd: nothing is logged.
func TestOutageReporterStopLogsNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		down  connectivity.State
		probe func(ctx context.Context, probing chan<- struct{}) error
	}{
		// The probe's dials end with the stop.
		{"probing", connectivity.TransientFailure, func(ctx context.Context, probing chan<- struct{}) error {
			close(probing)
			<-ctx.Done()
			return fmt.Errorf("http://etcd:2379: dial tcp 198.18.0.254:2379: %w", ctx.Err())
		}},
		// An attempt in flight, waited for (catchUp).
		{"attempt in flight", connectivity.Connecting, func(_ context.Context, probing chan<- struct{}) error {
			close(probing)
			return errEndpointAccepts
		}},
		// A backoff cut short, the next attempt waited for (reconnectNow).
		{"backoff cut short", connectivity.TransientFailure, func(_ context.Context, probing chan<- struct{}) error {
			close(probing)
			return errEndpointAccepts
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probing := make(chan struct{})
			conn, clk, logs, causes, stop := catchUpReporter(t, func(ctx context.Context) error { return tc.probe(ctx, probing) })
			conn.step(t, tc.down)
			n := conn.waits()
			clk.advance(3 * time.Second)
			<-probing
			if tc.name != "probing" {
				// The reporter waits on the connection again.
				conn.waitFor(t, n+1, tc.down)
			}
			if !stop() {
				t.Fatal("the reporter did not return once its context ended")
			}
			logs.expect(t, 0)
			if c := causes(); len(c) != 0 {
				t.Errorf("causes %q given at the stop, want none", c)
			}
		})
	}
}
