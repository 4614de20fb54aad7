package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// trackedListener counts the connections it accepted that are still open.
type trackedListener struct {
	net.Listener
	open atomic.Int64
}

type trackedConn struct {
	net.Conn
	l    *trackedListener
	once sync.Once
}

func (l *trackedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.open.Add(1)
	return &trackedConn{Conn: c, l: l}, nil
}

func (c *trackedConn) Close() error {
	c.once.Do(func() { c.l.open.Add(-1) })
	return c.Conn.Close()
}

// TestEtcdAuthTokenlessClosed: closing the client closes the connection of
// its own that tokenlessAuth made to send Authenticate again after etcd 3.4
// forgot our token (TestEtcdAuthTokenLostOnOldServer): once the client is
// closed, etcd holds no connection of the agent's.
func TestEtcdAuthTokenlessClosed(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	l := &trackedListener{Listener: ul}
	fake := serveOldAuth(t, l)
	cfg := &Config{EtcdEndpoints: []string{"unix://" + sock}, EtcdUsername: "flannel", EtcdPassword: "pw"}
	cli, err := newEtcdClient(cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	fake.forget()
	if _, err := cli.Get(ctx, "k"); err != nil {
		cli.Close()
		t.Fatalf("read after etcd forgot our token: %v", err)
	}
	if n := l.open.Load(); n != 2 {
		t.Errorf("%d connections open before the close, want the client's and tokenlessAuth's", n)
	}
	cli.Close()
	if err := cluster.Eventually(ctx, 5*time.Second, func() error {
		if n := l.open.Load(); n != 0 {
			return fmt.Errorf("%d connections still open", n)
		}
		return nil
	}); err != nil {
		t.Errorf("after the client's Close: %v; want none", err)
	}
}

// TestEtcdAuthTokenLostTwice: tokenlessAuth's own client carries no user
// name, so it holds no token for etcd to forget: after a second restart of
// etcd 3.4 (TestEtcdAuthTokenLostOnOldServer is the first) the
// Authenticate it sends again is still tokenless, and the agent's reads go
// on.
func TestEtcdAuthTokenLostTwice(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fake := serveOldAuth(t, l)
	cfg := &Config{EtcdEndpoints: []string{"unix://" + sock}, EtcdUsername: "flannel", EtcdPassword: "pw"}
	cli, err := newEtcdClient(cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	for i := range 3 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := cli.Get(ctx, "k")
		cancel()
		if err != nil {
			t.Fatalf("read after etcd restarted %d times: %v", i, err)
		}
		fake.forget() // etcd restarted
	}
}

// serveOldAuth serves an oldAuthServer on l until the test's end.
func serveOldAuth(t *testing.T, l net.Listener) *oldAuthServer {
	srv := grpc.NewServer()
	fake := &oldAuthServer{tokens: map[string]bool{}}
	pb.RegisterAuthServer(srv, fake)
	pb.RegisterKVServer(srv, fake)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return fake
}

// TestEtcdWrongPasswordHint: etcd's refusal of the user's password at the
// client's start says which flags to check, as a refusal of a later
// request does (withAuthHint): "etcdserver: authentication failed, invalid
// user ID or password" alone names no flag of agentd's.
func TestEtcdWrongPasswordHint(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	serveOldAuth(t, l)
	cfg := &Config{EtcdEndpoints: []string{"unix://" + sock}, EtcdUsername: "flannel", EtcdPassword: "wrong"}
	cli, err := newEtcdClient(cfg, logr.Discard())
	if err == nil {
		cli.Close()
		t.Fatal("client made with a wrong password")
	}
	if !strings.Contains(err.Error(), "authentication failed") || !strings.Contains(err.Error(), "check --etcd-username and --etcd-password") {
		t.Errorf("client: %v; want etcd's refusal and the flags to check", err)
	}
}

// TestConnectEtcdRetriesUnanswered: with --etcd-username, connectEtcd
// tries again while etcd does not answer the user's authentication (here
// an endpoint that takes connections and answers nothing), reporting why
// for /readyz, until it is stopped: under a DaemonSet an exit lengthens the
// crash-loop backoff to minutes after etcd is back. A refused password is
// not retried: connectEtcd returns etcd's refusal, not the end of its own
// attempt ("context canceled").
func TestConnectEtcdRetriesUnanswered(t *testing.T) {
	t.Run("unanswered", func(t *testing.T) {
		cfg := &Config{EtcdEndpoints: []string{silentSocket(t)}, EtcdUsername: "flannel", EtcdPassword: "pw"}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		reported := make(chan error, 10)
		type result struct {
			c   *etcdConn
			err error
		}
		done := make(chan result, 1)
		go func() {
			c, err := connectEtcd(ctx, cfg, logr.Discard(), func(_ string, err error) { reported <- err })
			done <- result{c, err}
		}()
		select {
		case err := <-reported:
			t.Logf("reported: %v", err)
			if err == nil || !strings.Contains(err.Error(), "authenticate to etcd as flannel") {
				t.Errorf("reported %v; want the authentication unanswered", err)
			}
		case r := <-done:
			if r.c != nil {
				r.c.Close()
			}
			t.Fatalf("connectEtcd returned (%v) while etcd did not answer; want it to retry until stopped", r.err)
		case <-time.After(30 * time.Second):
			t.Fatal("no failure reported in 30 s")
		}
		cancel()
		if r := <-done; !errors.Is(r.err, context.Canceled) {
			t.Errorf("connectEtcd after the stop: %v; want %v", r.err, context.Canceled)
		}
	})
	t.Run("refused", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "etcd.sock")
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		serveOldAuth(t, l)
		cfg := &Config{EtcdEndpoints: []string{"unix://" + sock}, EtcdUsername: "flannel", EtcdPassword: "wrong"}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		c, err := connectEtcd(ctx, cfg, logr.Discard(), func(string, error) {})
		if err == nil {
			c.Close()
			t.Fatal("connected with a wrong password")
		}
		if !strings.Contains(err.Error(), "authentication failed") {
			t.Errorf("connectEtcd: %v; want etcd's refusal, at once", err)
		}
	})
}
