package agent

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/etcdtest"
	"github.com/go-logr/logr"
)

// TestLeaseTTLCountedFromKeepAliveSent: the time left on our etcd lease
// counts from when the keepalive was sent, not from when its answer came.
// etcd counts the TTL from the keepalive's arrival, so an answer that took
// a second to come back left a second less than its TTL: counted from the
// answer, /readyz, STATUS= and agentd_lease_ttl_remaining_seconds called
// the lease held for up to the one-way delay after etcd let it go. Here
// etcd's answers come back through a proxy that holds them a second: just
// after the first answer to a keepalive of a 10 s lease, at most 9 s are
// left (before 2026-12-07: 10 s).
//
// The test runs as a child in a network namespace of its own, whose
// loopback carries the member (client port 2379) and the proxy (2479).
func TestLeaseTTLCountedFromKeepAliveSent(t *testing.T) {
	inOwnNetns(t, leaseTTLCountedFromSentChild)
}

func leaseTTLCountedFromSentChild(t *testing.T) {
	const (
		answersLate = time.Second
		ttlSecs     = 10
	)
	loopbackUp(t)
	a, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", a)
	l, err := net.Listen("tcp", "127.0.0.1:2479")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, l, func(c net.Conn) { forwardAnswersLate(t.Context(), c, "127.0.0.1:2379", answersLate) })

	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2479"}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ttl := &leaseTTL{}
	ttl.follow(c.Client)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	g, err := c.Grant(ctx, ttlSecs)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := c.KeepAlive(ctx, g.ID)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case resp, ok := <-ka:
		if !ok || resp.TTL != ttlSecs {
			t.Fatalf("keepalive answered %v (open %v), want a TTL of %d", resp, ok, ttlSecs)
		}
	case <-ctx.Done():
		t.Fatal("no keepalive answered")
	}
	left, ok := ttl.left(g.ID)
	if !ok || left > ttlSecs*time.Second-answersLate {
		t.Fatalf("just after the answer to a keepalive of a %d s lease, whose answers come %v late, %v left (known %v), want at most %v: counted from the answer, not from the keepalive etcd counts from",
			ttlSecs, answersLate, left, ok, ttlSecs*time.Second-answersLate)
	}
	t.Logf("%v left just after the answer (TTL %d s, answers %v late)", left.Round(time.Millisecond), ttlSecs, answersLate)
}

// forwardAnswersLate forwards c to addr unchanged, and what addr sends back
// to c each late after it came: an etcd whose answers take that much
// longer to come back, in order. Both connections close when ctx ends.
func forwardAnswersLate(ctx context.Context, c net.Conn, addr string, late time.Duration) {
	u, err := net.Dial("tcp", addr)
	if err != nil {
		c.Close()
		return
	}
	defer context.AfterFunc(ctx, func() { c.Close(); u.Close() })()
	go func() {
		_, _ = io.Copy(u, c)
		u.Close()
	}()
	etcdtest.DelayCopy(c, u, func() time.Duration { return late })
}
