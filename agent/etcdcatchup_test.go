package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc/connectivity"
)

// catchUpReporter runs an outage reporter on a fake connection and clock
// whose probe calls probe, and returns them with its log lines, the causes
// it gave and stop, which ends its context and says whether it returned
// within 5 s, once the reporter has seen the connection Ready.
func catchUpReporter(t *testing.T, probe func(context.Context) error) (*fakeConn, *fakeClock, *logLines, func() []string, func() bool) {
	t.Helper()
	return runFakeReporter(t, func(r *outageReporter) {
		r.probe = probe
		r.endpoints = []string{"http://etcd:2379"}
	})
}

// runFakeReporter is catchUpReporter for a reporter whose probe, endpoints
// and the like set gives.
func runFakeReporter(t *testing.T, set func(*outageReporter)) (*fakeConn, *fakeClock, *logLines, func() []string, func() bool) {
	t.Helper()
	conn, clk := newFakeConn(), newFakeClock()
	logs := &logLines{}
	var mu sync.Mutex
	var causes []string
	r := &outageReporter{
		conn: conn,
		cause: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			causes = append(causes, fmt.Sprint(err))
		},
		grace:   3 * time.Second,
		reprobe: 10 * time.Second,
		settle:  time.Second,
		clock:   clk,
		log:     funcr.New(logs.add, funcr.Options{}),
	}
	set(r)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	conn.waitFor(t, 1, connectivity.Ready)
	causesGiven := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), causes...)
	}
	stop := func() bool {
		cancel()
		select {
		case <-done:
			return true
		case <-time.After(5 * time.Second):
			return false
		}
	}
	return conn, clk, logs, causesGiven, stop
}

// TestNoOutageOnceBackDuringProbe: a connection that comes back while the
// probe runs has no outage to report. The reporter logged one anyway, its
// reason built from the connection's state read before it was back or
// after (the 30-minute fault soak: "an endpoint accepts connections, but
// the etcd client's connection is READY"), and the end of it right after.
// Here the probe itself makes the connection Ready, whatever it finds.
func TestNoOutageOnceBackDuringProbe(t *testing.T) {
	for _, down := range []connectivity.State{connectivity.TransientFailure, connectivity.Connecting} {
		for name, finding := range map[string]error{"accepts": errEndpointAccepts, "refused": errors.New("http://etcd:2379: connect: connection refused")} {
			t.Run(down.String()+"/"+name, func(t *testing.T) {
				var conn *fakeConn
				conn, clk, logs, causes, _ := catchUpReporter(t, func(context.Context) error {
					conn.set(connectivity.Ready)
					return finding
				})
				conn.step(t, down)
				n := conn.waits()
				clk.advance(3 * time.Second)
				conn.waitFor(t, n+1, connectivity.Ready)
				logs.expect(t, 0)
				if c := causes(); len(c) != 0 {
					t.Fatalf("causes %q for a connection back by the probe's end, want none", c)
				}
			})
		}
	}
}

// TestNoOutageWhileAttemptCatchesUp: once the probe finds etcd answering,
// a connection attempt of gRPC's still in flight may end before anything
// is logged. After a healed partition the agent logged "an endpoint accepts
// connections, but the etcd client's connection is CONNECTING", which the
// README reads as a hung etcd, and was connected again a moment later: the
// attempt, begun while the partition held, waited on the kernel's next try
// of its SYN (1 s, then 2 s later). The outage is logged only if the
// attempt does not end Ready within etcdConnectTimeout, nor a new one within
// settle.
func TestNoOutageWhileAttemptCatchesUp(t *testing.T) {
	// start takes the connection down (Connecting), lets the grace period
	// pass and waits until the reporter, having probed, waits on the
	// attempt: it has logged nothing.
	start := func(t *testing.T) (*fakeConn, *fakeClock, *logLines, func() []string) {
		conn, clk, logs, causes, _ := catchUpReporter(t, func(context.Context) error { return errEndpointAccepts })
		conn.step(t, connectivity.Connecting)
		n := conn.waits()
		clk.advance(3 * time.Second)
		conn.waitFor(t, n+1, connectivity.Connecting)
		logs.expect(t, 0)
		return conn, clk, logs, causes
	}
	noOutage := func(t *testing.T, logs *logLines, causes func() []string) {
		t.Helper()
		logs.expect(t, 0)
		if c := causes(); len(c) != 0 {
			t.Fatalf("causes %q, want none", c)
		}
	}
	t.Run("attempt succeeds", func(t *testing.T) {
		conn, _, logs, causes := start(t)
		conn.step(t, connectivity.Ready)
		noOutage(t, logs, causes)
	})
	t.Run("attempt fails, the next succeeds", func(t *testing.T) {
		conn, _, logs, causes := start(t)
		conn.step(t, connectivity.TransientFailure) // backoff cut short: waits for the next attempt
		conn.step(t, connectivity.Connecting)
		conn.step(t, connectivity.Ready)
		noOutage(t, logs, causes)
	})
	t.Run("attempt hangs", func(t *testing.T) {
		conn, clk, logs, causes := start(t)
		n := conn.waits()
		clk.advance(5 * time.Second) // etcdConnectTimeout
		conn.waitFor(t, n+1, connectivity.Connecting)
		logs.expect(t, 1)
		const want = `"error"="an endpoint accepts connections, but the etcd client's connection is CONNECTING" "endpoints"=["http://etcd:2379"] "downFor"="8s"`
		if l := logs.get()[0]; !strings.Contains(l, want) {
			t.Fatalf("logged\n%s\nwant it to contain\n%s", l, want)
		}
		if c := causes(); len(c) != 1 {
			t.Fatalf("causes %q, want one", c)
		}
		conn.step(t, connectivity.Ready)
		logs.expect(t, 2)
	})
}

// TestSilentEtcdReportedAtOnce: an endpoint that accepts connections but
// answers nothing (a hung etcd) is reported as soon as the grace period
// is over, whatever the state of the client's connection: there is no
// attempt worth waiting for.
func TestSilentEtcdReportedAtOnce(t *testing.T) {
	for _, down := range []connectivity.State{connectivity.TransientFailure, connectivity.Connecting} {
		t.Run(down.String(), func(t *testing.T) {
			conn, clk, logs, causes, _ := catchUpReporter(t, func(context.Context) error { return errEndpointSilent })
			conn.step(t, down)
			n := conn.waits()
			clk.advance(3 * time.Second)
			conn.waitFor(t, n+1, down)
			logs.expect(t, 1)
			const want = `"error"="an endpoint accepts connections but answers nothing within 2s" "endpoints"=["http://etcd:2379"] "downFor"="3s"`
			if l := logs.get()[0]; !strings.Contains(l, want) {
				t.Fatalf("logged\n%s\nwant it to contain\n%s", l, want)
			}
			if c := causes(); len(c) != 1 || c[0] != errEndpointSilent.Error() {
				t.Fatalf("causes %q, want %q", c, errEndpointSilent)
			}
		})
	}
}

// TestProbeSilentEndpoint: an endpoint that accepts connections without
// TLS but answers nothing (a hung etcd: the kernel accepts for it) is
// found as such, so that the reporter does not wait on the client's
// attempt; one that answers, or closes, is found accepting. The probe took
// any connection that the kernel accepted for etcd accepting.
func TestProbeSilentEndpoint(t *testing.T) {
	dir := t.TempDir()
	listen := func(name string, serve func(net.Conn)) string {
		sock := filepath.Join(dir, name)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		serveEach(t, l, serve)
		return "unix://" + sock
	}
	stop := make(chan struct{})
	silent := listen("silent.sock", func(net.Conn) { <-stop })
	defer close(stop)
	answers := listen("answers.sock", func(c net.Conn) {
		c.Read(make([]byte, 1))
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	})
	closes := listen("closes.sock", func(net.Conn) {})

	for _, tc := range []struct {
		name      string
		endpoints []string
		accepts   bool
	}{
		{"silent", []string{silent}, false},
		{"silent and answering", []string{silent, answers}, true},
		{"closing", []string{closes}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.EtcdEndpoints = tc.endpoints
			c, err := newEtcdClient(&cfg, logr.Discard())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			err = c.probe(t.Context())
			if got := errors.Is(err, errEndpointAccepts); got != tc.accepts {
				t.Fatalf("probe: %v; accepting %v, want %v", err, got, tc.accepts)
			}
			if !tc.accepts && !strings.Contains(fmt.Sprint(err), "an endpoint accepts connections but answers nothing") {
				t.Fatalf("probe: %v, want it to say the endpoint answers nothing", err)
			}
		})
	}
}

// serveEach serves every connection l accepts with serve, on a goroutine of
// its own, and closes it after; at the test's end it closes l and waits for
// them all.
func serveEach(t *testing.T, l net.Listener, serve func(net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				serve(c)
			}()
		}
	}()
}
