package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestCLIUserEtcdUnanswered: with --etcd-username, the etcd client asks
// etcd for a token before agentctl's first request, and waited 5 s for it
// whatever --timeout said, then agentctl printed only "etcd client for …:
// context deadline exceeded". It now waits --timeout (1 s here) and says
// why etcd did not answer, as for a request: the connection was refused
// (etcd stopped). A failed TLS handshake (etcd's certificate of a CA not
// given with --etcd-cafile), which waiting cannot mend, ends the wait at
// once, with its cause (it waited the second too). No agent runs.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentctl --etcd-username=u
//	               └─ etcd 198.18.0.254  etcd, TLS; then stopped
func TestCLIUserEtcdUnanswered(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1, EtcdTLS: &cluster.EtcdTLS{}, Logf: t.Logf})
	f := &fixture{t: t, ctx: context.Background(), c: c}
	if _, err := c.Binary(f.ctx, "agentctl"); err != nil { // not in the times measured
		t.Fatal(err)
	}
	ca, _, _ := c.EtcdTLSFiles()
	check := func(name string, args []string, words ...string) {
		t.Helper()
		args = append([]string{"--timeout=1s", "--etcd-username=u", "--etcd-password=p"}, append(args, "leases")...)
		start := time.Now()
		code, out := f.agentctl(c.Host(1), args...)
		took := time.Since(start)
		t.Logf("%s: $ agentctl %s\n%s(exit %d, %v)", name, strings.Join(args, " "), out, code, took.Round(10*time.Millisecond))
		out = afterPasswordWarning(t, args, out)
		if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("%s: exit %d, want 1 with one line", name, code)
		}
		for _, w := range words {
			if !strings.Contains(out, w) {
				t.Errorf("%s: agentctl does not say %q", name, w)
			}
		}
		// 1 s, then the probe's answer, at once for both.
		if took > 4*time.Second {
			t.Errorf("%s: took %v with --timeout=1s", name, took.Round(10*time.Millisecond))
		}
	}
	check("no CA file", nil, "authenticate to etcd as u: https://198.18.0.254:2379: TLS handshake:",
		"x509: certificate signed by unknown authority", "give that CA's certificate with --etcd-cafile")
	if err := c.StopEtcd(); err != nil {
		t.Fatal(err)
	}
	check("etcd stopped", []string{"--etcd-cafile=" + ca}, "authenticate to etcd as u: etcd did not answer within 1s",
		"https://198.18.0.254:2379: connect: dial tcp 198.18.0.254:2379: connect: connection refused")
}
