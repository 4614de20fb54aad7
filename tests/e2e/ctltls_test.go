package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestCLIUntrustedEtcdCert: agentctl against etcd whose certificate is of a
// CA it does not trust (no --etcd-cafile, or one of another CA) fails as
// soon as the TLS handshake does, naming the x509 problem and the flag that
// fixes it, not when --timeout (here 20 s) runs out: the etcd client
// retries a failed handshake quietly, and agentctl waited the whole
// timeout before probing. No agent runs.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentctl
//	               └─ etcd 198.18.0.254  etcd, TLS, a certificate of "agentd test CA"
func TestCLIUntrustedEtcdCert(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: &cluster.EtcdTLS{}, Logf: t.Logf})
	f := &fixture{t: t, ctx: context.Background(), c: c}
	other := filepath.Join(t.TempDir(), "other-ca.crt")
	writeSelfSignedCA(t, other)
	if _, err := c.Binary(f.ctx, "agentctl"); err != nil { // not in the times measured
		t.Fatal(err)
	}
	const timeout = 20 * time.Second
	for _, tc := range []struct {
		name  string
		args  []string
		words []string
	}{
		{"no CA file", nil, []string{"x509: certificate signed by unknown authority",
			`etcd's certificate is of a CA (CN=agentd test CA) this host does not trust: give that CA's certificate with --etcd-cafile`}},
		{"another CA", []string{"--etcd-cafile=" + other}, []string{"x509: certificate signed by unknown authority",
			"etcd's certificate chain ends at a CA (CN=agentd test CA) that is not in --etcd-cafile"}},
	} {
		for _, cmd := range [][]string{{"leases"}, {"config", "show"}} {
			args := append(append([]string{"--timeout=" + timeout.String()}, tc.args...), cmd...)
			start := time.Now()
			code, out := f.agentctl(c.Host(1), args...)
			took := time.Since(start)
			t.Logf("%s: $ agentctl %s\n%s(exit %d, %v)", tc.name, strings.Join(args, " "), out, code, took.Round(10*time.Millisecond))
			if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("%s: agentctl %s: exit %d, want 1 with one line", tc.name, strings.Join(cmd, " "), code)
			}
			for _, w := range tc.words {
				if !strings.Contains(out, w) {
					t.Errorf("%s: agentctl %s does not say %q", tc.name, strings.Join(cmd, " "), w)
				}
			}
			if took > timeout/4 {
				t.Errorf("%s: agentctl %s took %v with --timeout=%v; want an answer once the handshake fails", tc.name, strings.Join(cmd, " "), took.Round(10*time.Millisecond), timeout)
			}
		}
	}
}
