package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestEndpointCheckSlowAnswerIsUp: an etcd endpoint whose answers come
// late, but within the check's own time (endpointCheckTimeout), is up. The
// check's connection of its own waited refusalWait (2 s) for an answer to
// GET /version and, without one, called the endpoint down ("accepts
// connections but answers nothing within 2s") before its status request
// was sent: with a round trip of a second (an etcd 500 ms away each way,
// as tc netem delays it; measured on the namespace cluster with a delaying
// proxy) every endpoint was logged unreachable, serving "0 of 2", and
// agentd_etcd_endpoint_up was 0, while the client, which waits 5 s, kept
// the lease alive and followed the watch. Here the endpoint is a proxy in
// front of a real member that holds each connection's first answer back
// for refusalWait and a second: the status request, sent beside the
// connection attempt, is answered well within endpointCheckTimeout.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries the member (client port 2379)
// and the proxy (2479).
func TestEndpointCheckSlowAnswerIsUp(t *testing.T) {
	inOwnNetns(t, endpointCheckSlowAnswerChild)
}

func endpointCheckSlowAnswerChild(t *testing.T) {
	loopbackUp(t)
	a, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", a)
	l, err := net.Listen("tcp", "127.0.0.1:2479")
	if err != nil {
		t.Fatal(err)
	}
	const firstAnswerAfter = refusalWait + time.Second
	serveEach(t, l, func(c net.Conn) { forwardFirstAnswerLate(t.Context(), c, "127.0.0.1:2379", firstAnswerAfter) })

	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379"}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(t.Context(), endpointCheckTimeout)
	defer cancel()
	start := time.Now()
	_, err = c.checkEndpoint(ctx, "http://127.0.0.1:2479")
	took := time.Since(start).Round(time.Millisecond)
	if err != nil {
		t.Fatalf("an endpoint answering after %v, within the check's %v, checked as down after %v: %v", firstAnswerAfter, endpointCheckTimeout, took, err)
	}
	t.Logf("checked as up after %v", took)
}

// forwardFirstAnswerLate forwards c to addr, and what addr sends back to c,
// but holds its first bytes back until after has passed since the call: an
// endpoint whose first answer on each connection is late.
func forwardFirstAnswerLate(ctx context.Context, c net.Conn, addr string, after time.Duration) {
	held := time.NewTimer(after)
	defer held.Stop()
	u, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer u.Close()
	go func() {
		_, _ = io.Copy(u, c)
		u.Close()
	}()
	b := make([]byte, 32<<10)
	n, err := u.Read(b)
	select {
	case <-held.C:
	case <-ctx.Done():
		return
	}
	if n > 0 {
		if _, werr := c.Write(b[:n]); werr != nil {
			return
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return
	}
	if err == nil {
		_, _ = io.Copy(c, u)
	}
}
