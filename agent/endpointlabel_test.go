package agent

import (
	"context"
	"errors"
	"testing"

	"github.com/go-logr/logr"
)

// TestEndpointUpLabelNotUTF8: a socket path may hold any bytes, and
// --etcd-endpoints takes one (unix:/run/etcd\xff.sock passes validation),
// but a Prometheus label value must be UTF-8: WithLabelValues panicked in
// the endpoint checker's goroutine at its first round, which took the
// daemon down, with one endpoint or several. The series is there, each
// byte that is not UTF-8 written \xHH, so two such paths keep two series.
func TestEndpointUpLabelNotUTF8(t *testing.T) {
	eps := []string{"unix:/run/etcd\xff.sock", "unix:/run/etcd\xfe.sock"}
	for _, ep := range eps {
		cfg := DefaultConfig()
		cfg.EtcdEndpoints = []string{ep}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%q refused (%v); the test needs an endpoint the agent takes", ep, err)
		}
	}
	for _, tc := range []struct {
		name string
		eps  []string
	}{{"alone", eps[:1]}, {"several", eps}} {
		t.Run(tc.name, func(t *testing.T) {
			obs := newObserver()
			cfg := DefaultConfig()
			cfg.EtcdEndpoints = tc.eps
			c := newEndpointChecker(&cfg, &etcdConn{}, logr.Discard(), obs)
			c.status = func(context.Context, string) ([]EtcdAlarm, error) { return nil, errors.New("no such socket") }
			c.check(context.Background(), make([]EndpointStatus, len(tc.eps)))
			for _, want := range []string{`unix:/run/etcd\xff.sock`, `unix:/run/etcd\xfe.sock`}[:len(tc.eps)] {
				if v := gaugeValue(t, obs, "agentd_etcd_endpoint_up", "endpoint", want); v != 0 {
					t.Errorf("agentd_etcd_endpoint_up{endpoint=%q} %v, want 0", want, v)
				}
			}
		})
	}
}

// TestEndpointLabel: valid UTF-8 (U+FFFD included) is kept as it is.
func TestEndpointLabel(t *testing.T) {
	for in, want := range map[string]string{
		"http://198.18.0.254:2379": "http://198.18.0.254:2379",
		"unix:/run/é\uFFFD.sock":   "unix:/run/é\uFFFD.sock",
		"unix:/run/\xc3.sock\x80":  `unix:/run/\xc3.sock\x80`,
	} {
		if got := endpointLabel(in); got != want {
			t.Errorf("endpointLabel(%q) = %q, want %q", in, got, want)
		}
	}
}
