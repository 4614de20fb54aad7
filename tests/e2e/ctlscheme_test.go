package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestCLIEndpointSchemeMismatch: agentctl given http:// for etcd that serves
// TLS, or https:// for etcd that does not, says which scheme to write, as
// soon as the connection fails, not when --timeout (here 20 s) runs out.
// Both servers just close the connection on the other kind of request, which
// the etcd client retries quietly: agentctl said, after the timeout, "…
// accepts connections (no quorum, or overloaded?)" for the first and "TLS
// handshake: EOF" for the second. No agent runs.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentctl
//	               └─ etcd 198.18.0.254  etcd, with TLS, then another without
func TestCLIEndpointSchemeMismatch(t *testing.T) {
	const timeout = 20 * time.Second
	for _, tc := range []struct {
		name     string
		tls      *cluster.EtcdTLS
		endpoint string
		words    []string
	}{
		{"http:// to TLS", &cluster.EtcdTLS{}, "http://198.18.0.254:2379",
			[]string{"http://198.18.0.254:2379: the endpoint speaks TLS", "write https:// in --etcd-endpoints"}},
		{"https:// to plain", nil, "https://198.18.0.254:2379",
			[]string{"https://198.18.0.254:2379: TLS handshake: EOF; the endpoint answers in plain HTTP, without TLS: write http:// in --etcd-endpoints"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: tc.tls, Logf: t.Logf})
			f := &fixture{t: t, ctx: context.Background(), c: c}
			if _, err := c.Binary(f.ctx, "agentctl"); err != nil { // not in the times measured
				t.Fatal(err)
			}
			for _, cmd := range [][]string{{"leases"}, {"config", "init", "--network", "10.244.0.0/16"}} {
				args := append([]string{"--timeout=" + timeout.String(), "--etcd-endpoints=" + tc.endpoint}, cmd...)
				start := time.Now()
				code, out := f.agentctl(c.Host(1), args...)
				took := time.Since(start)
				t.Logf("$ agentctl %s\n%s(exit %d, %v)", strings.Join(args, " "), out, code, took.Round(10*time.Millisecond))
				if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
					t.Errorf("agentctl %s: exit %d, want 1 with one line", strings.Join(cmd, " "), code)
				}
				for _, w := range tc.words {
					if !strings.Contains(out, w) {
						t.Errorf("agentctl %s does not say %q", strings.Join(cmd, " "), w)
					}
				}
				if took > timeout/4 {
					t.Errorf("agentctl %s took %v with --timeout=%v; want an answer once the connection fails", strings.Join(cmd, " "), took.Round(10*time.Millisecond), timeout)
				}
			}
		})
	}
}
