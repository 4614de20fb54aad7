package agent

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// TestOutagePeerPortBesideRefused: a running agent whose --etcd-endpoints
// list, beside the etcd it uses, another member's peer port (2380's kind)
// for its client port names that port as the cause for its endpoint, and
// the refusal for the other, in the outage line once the etcd it used is
// stopped, as the timeout's explanation does (probeClientPorts). The line
// said "an endpoint accepts connections, but the etcd client's connection
// is TRANSIENT_FAILURE": the peer port's answer to GET /version passed for
// etcd's.
//
// The test runs as a child in a network namespace of its own, with two
// one-member etcds on its loopback: a (clients on 2379, peers on 2380),
// which the agent's client uses and the test stops, and b (clients on
// 2389, peers on 2390), whose peer port is listed.
func TestOutagePeerPortBesideRefused(t *testing.T) {
	inOwnNetns(t, outagePeerPortBesideRefusedChild)
}

func outagePeerPortBesideRefusedChild(t *testing.T) {
	loopbackUp(t)
	a, stopA := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	b, _ := startMember(t, "b", 2389, 2390, "b=http://127.0.0.1:2390")
	waitReady(t, "etcd", a, b)
	const refused, peer = "http://127.0.0.1:2379", "http://127.0.0.1:2390"
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{refused, peer}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	logs := &logLines{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.reportOutages(ctx, funcr.New(logs.add, funcr.Options{}), func(error) {})
	}()
	defer func() {
		cancel()
		<-done
	}()
	c.Watch(clientv3.WithRequireLeader(ctx), "/watched")
	if _, err := c.Get(ctx, "/watched"); err != nil {
		t.Fatal(err)
	}

	stopA()
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		if len(logs.get()) == 0 {
			return fmt.Errorf("nothing logged; the connection is %s", c.ActiveConnection().GetState())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("etcd a stopped: %v", err)
	}
	line := logs.get()[0]
	t.Logf("%s", line)
	for _, w := range []string{
		`"msg"="etcd unreachable;`,
		refused + ": connect: ",
		peer + ": the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks: it is not etcd's client port",
	} {
		if !strings.Contains(line, w) {
			t.Errorf("the outage line does not say %q", w)
		}
	}
	if strings.Contains(line, "TRANSIENT_FAILURE") {
		t.Errorf("the outage line blames the client's connection")
	}
	if c.ActiveConnection().GetState() == connectivity.Ready {
		t.Errorf("the connection is Ready with etcd a stopped")
	}
}

// TestOutageNotClientPortLoggedOnce: the outage reporter asks whether an
// endpoint is etcd's client port only once the connection has stayed down
// although an endpoint answers, so an outage that ends as etcd comes back
// costs no more connections; the finding (here an HTTP/1 server, as etcd's
// peer port is, beside a refusal) is logged once, and found the same at the
// reprobe. The reporter runs on a fake connection and clock, the real
// probe on unix sockets.
func TestOutageNotClientPortLoggedOnce(t *testing.T) {
	dir := t.TempDir()
	refused := refusedSocket(t)
	http1 := filepath.Join(dir, "http1.sock")
	l, err := net.Listen("unix", http1)
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, l, func(c net.Conn) { // answers anything, HTTP/2's preface too, as etcd's peer port does
		var b [64]byte
		if _, err := c.Read(b[:]); err == nil {
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n"))
		}
	})
	start := func(t *testing.T, endpoints ...string) (*fakeConn, *fakeClock, *logLines, func() []string, *atomic.Int32) {
		c := &etcdConn{endpoints: endpoints}
		var asked atomic.Int32
		conn, clk, logs, causes, _ := runFakeReporter(t, func(r *outageReporter) {
			r.probe = c.probe
			r.askClientPorts = func(ctx context.Context, err error) error {
				asked.Add(1)
				return c.askClientPorts(ctx, err)
			}
			r.endpoints = endpoints
		})
		return conn, clk, logs, causes, &asked
	}
	// down takes the connection down and lets the grace period pass: the
	// reporter probes, finds an endpoint answering, and gives the
	// connection settle to come back.
	down := func(t *testing.T, conn *fakeConn, clk *fakeClock) {
		conn.step(t, connectivity.TransientFailure)
		n := conn.waits()
		clk.advance(3 * time.Second)
		conn.waitFor(t, n+1, connectivity.TransientFailure)
	}

	t.Run("back", func(t *testing.T) {
		conn, clk, logs, causes, asked := start(t, "unix://"+http1)
		down(t, conn, clk)
		conn.step(t, connectivity.Ready)
		logs.expect(t, 0)
		if c, a := causes(), asked.Load(); len(c) != 0 || a != 0 {
			t.Fatalf("causes %q, asked about client ports %d times; want none, for a connection back within settle", c, a)
		}
	})
	t.Run("down", func(t *testing.T) {
		conn, clk, logs, causes, asked := start(t, refused, "unix://"+http1)
		down(t, conn, clk)
		n := conn.waits()
		clk.advance(time.Second) // settle
		conn.waitFor(t, n+1, connectivity.TransientFailure)
		logs.expect(t, 1)
		for _, w := range []string{
			`"msg"="etcd unreachable;`,
			`"error"="` + refused + `: connect: `,
			`; unix://` + http1 + `: the endpoint answers HTTP/1 but not the HTTP/2 that etcd's gRPC speaks: it is not etcd's client port`,
		} {
			if l := logs.get()[0]; !strings.Contains(l, w) {
				t.Fatalf("logged\n%s\nwant it to contain\n%s", l, w)
			}
		}
		clk.advance(10 * time.Second) // reprobe
		conn.waitFor(t, n+2, connectivity.TransientFailure)
		clk.advance(time.Second) // settle
		conn.waitFor(t, n+3, connectivity.TransientFailure)
		logs.expect(t, 1)
		if c, a := causes(), asked.Load(); len(c) != 2 || c[0] != c[1] || a != 2 {
			t.Fatalf("causes %q, asked about client ports %d times; want the same cause twice, asked twice", c, a)
		}
	})
}
