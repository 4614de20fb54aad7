package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestCLIEtcdPeerPort: agentctl given etcd's peer port (2380) for its client
// port says the port is not etcd's client port, as soon as the connection
// fails. The peer port answers GET /version, so agentctl said, after
// --timeout (here 20 s), "etcd did not answer within 20s although
// http://198.18.0.254:2380 accepts connections (no quorum, or
// overloaded?)"; it answers gRPC's HTTP/2 preface with "HTTP/1.1 400 Bad
// Request", which etcd's client port never does. No agent runs.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      agentctl
//	               └─ etcd 198.18.0.254  etcd: clients on 2379, peers on 2380
func TestCLIEtcdPeerPort(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1, Logf: t.Logf})
	f := &fixture{t: t, ctx: context.Background(), c: c}
	if _, err := c.Binary(f.ctx, "agentctl"); err != nil { // not in the times measured
		t.Fatal(err)
	}
	const timeout = 20 * time.Second
	args := []string{"--timeout=" + timeout.String(), "--etcd-endpoints=http://198.18.0.254:2380", "leases"}
	start := time.Now()
	code, out := f.agentctl(c.Host(1), args...)
	took := time.Since(start)
	t.Logf("$ agentctl %s\n%s(exit %d, %v)", strings.Join(args, " "), out, code, took.Round(10*time.Millisecond))
	if code != 1 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("exit %d, want 1 with one line", code)
	}
	for _, w := range []string{"http://198.18.0.254:2380: the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks", "check the port in --etcd-endpoints"} {
		if !strings.Contains(out, w) {
			t.Errorf("agentctl does not say %q", w)
		}
	}
	if took > timeout/4 {
		t.Errorf("took %v with --timeout=%v; want an answer once the connection fails", took.Round(10*time.Millisecond), timeout)
	}
}
