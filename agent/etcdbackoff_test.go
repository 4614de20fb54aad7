package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

// TestReconnectWhenEtcdAcceptsAgain: once etcd takes connections again
// (restarted, a partition healed) while the client's connection waits out
// gRPC's reconnect backoff (up to 5 s), the outage reporter's probe finds it
// and the client reconnects at once, not at the end of the backoff. The
// fault soak (make soak SOAK_FAULTS=1) found agents connected again only 2.6
// s (p50) to 5.6 s after etcd was back, logging meanwhile that etcd "accepts
// connections, but the etcd client's connection is TRANSIENT_FAILURE",
// which the README reads as a hung etcd.
//
// The test runs as a child in a network namespace of its own, with a
// one-member etcd on its loopback behind a proxy that, until switched,
// accepts connections and closes those that speak (gRPC's), as a freshly
// restarted etcd would refuse them a moment earlier. The switch comes right
// after a failed attempt once the backoff has grown: the next attempt of
// gRPC's own is seconds away.
func TestReconnectWhenEtcdAcceptsAgain(t *testing.T) {
	inOwnNetns(t, reconnectWhenEtcdAcceptsAgainChild)
}

func reconnectWhenEtcdAcceptsAgainChild(t *testing.T) {
	loopbackUp(t)
	e, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380")
	waitReady(t, "etcd", e)
	ln, err := net.Listen("tcp", "127.0.0.1:23790")
	if err != nil {
		t.Fatal(err)
	}
	var forward atomic.Bool
	attempts := make(chan struct{}, 100)
	serveEach(t, ln, func(c net.Conn) {
		if !forward.Load() {
			// The probe asks GET /version (and takes the close for an
			// answer); gRPC speaks HTTP/2.
			b := make([]byte, 1)
			if _, err := c.Read(b); err == nil && b[0] != 'G' {
				select {
				case attempts <- struct{}{}:
				default:
				}
			}
			return
		}
		up, err := net.Dial("tcp", "127.0.0.1:2379")
		if err != nil {
			return
		}
		go func() {
			io.Copy(up, c)
			up.Close()
		}()
		io.Copy(c, up)
	})

	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:23790"}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// A watch keeps the client reconnecting, as the agent's does. It
	// waits for a connection to open its stream: not here.
	go c.Watch(clientv3.WithRequireLeader(ctx), "/watched")
	conn := c.ActiveConnection()
	r := &outageReporter{conn: conn, probe: c.probe, cause: func(error) {}, endpoints: cfg.EtcdEndpoints,
		grace: 200 * time.Millisecond, reprobe: 200 * time.Millisecond, settle: reconnectSettle, clock: realClock{}, log: logr.Discard()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Four failed attempts: without the probe's help the next is 4.1 s
	// (±20%) away.
	for i := range 4 {
		select {
		case <-attempts:
		case <-time.After(20 * time.Second):
			t.Fatalf("gRPC made %d connection attempts in 20 s, want 4", i)
		}
	}
	forward.Store(true)
	switched := time.Now()
	const within = 1500 * time.Millisecond
	wctx, wcancel := context.WithTimeout(ctx, within)
	defer wcancel()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(wctx, s) {
			t.Fatalf("the client's connection is %v %v after etcd accepts connections again, want Ready within %v", s, time.Since(switched).Round(time.Millisecond), within)
		}
	}
	t.Logf("connected %v after etcd accepts connections again", time.Since(switched).Round(time.Millisecond))
	if _, err := c.Get(ctx, "/watched"); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
