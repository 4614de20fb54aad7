// Package etcdtest starts a real etcd server (go.etcd.io/etcd/server/v3/embed,
// the same release as the client) for tests. The server's sockets live in a
// network namespace made for the test, so no test traffic touches the root
// namespace; clients reach it through a dialer that opens each socket inside
// that namespace.
package etcdtest

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3client"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// RequireRoot fails the test when it cannot create namespaces: in CI (CI set)
// that is an error; elsewhere the test is skipped with the reason.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	msg := "this test needs root to create network namespaces"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Server is an embedded etcd listening on 127.0.0.1:2379 inside its own
// network namespace.
type Server struct {
	NS       string // the namespace's name under /var/run/netns
	Endpoint string
	etcd     *embed.Etcd
}

var seq atomic.Int32

// Start starts a single-member etcd in a new namespace and stops it (and
// deletes the namespace) when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	RequireRoot(t)
	removeStale()
	name := fmt.Sprintf("adetcd%d-%d", os.Getpid(), seq.Add(1))
	s, err := start(name, t.TempDir())
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("stop etcd: %v", err)
		}
	})
	return s
}

func start(name, dir string) (*Server, error) {
	return onThrowawayThread(func() (*Server, error) {
		// NewNamed switches this thread into the new namespace.
		ns, err := netns.NewNamed(name)
		if err != nil {
			return nil, fmt.Errorf("create netns %s: %w", name, err)
		}
		ns.Close()
		s, err := startHere(name, dir)
		if err != nil {
			netns.DeleteNamed(name)
		}
		return s, err
	})
}

func startHere(name, dir string) (*Server, error) {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("lo up: %w", err)
	}

	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = dir
	cfg.UnsafeNoFsync = true
	cfg.EnableGRPCGateway = false
	// Its shutdown logs "errors" that are part of closing; tests report
	// their own failures.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	cu, _ := url.Parse("http://127.0.0.1:2379")
	pu, _ := url.Parse("http://127.0.0.1:2380")
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, err
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		return nil, fmt.Errorf("etcd not ready after 30s")
	}
	return &Server{NS: name, Endpoint: cu.String(), etcd: e}, nil
}

// NewNetns creates an empty network namespace with its loopback up, for a
// test that needs sockets of its own (reach them with InNetns and
// NetnsDialer), and deletes it when the test ends.
func NewNetns(t testing.TB) string {
	t.Helper()
	RequireRoot(t)
	removeStale()
	name := fmt.Sprintf("adetcd%d-%d", os.Getpid(), seq.Add(1))
	_, err := onThrowawayThread(func() (struct{}, error) {
		ns, err := netns.NewNamed(name)
		if err != nil {
			return struct{}{}, fmt.Errorf("create netns %s: %w", name, err)
		}
		ns.Close()
		lo, err := netlink.LinkByName("lo")
		if err == nil {
			err = netlink.LinkSetUp(lo)
		}
		return struct{}{}, err
	})
	if err != nil {
		netns.DeleteNamed(name)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	return name
}

// removeStale deletes namespaces left by test processes that were killed
// before their cleanup ran; their names carry the pid of their process.
func removeStale() {
	ents, _ := os.ReadDir("/var/run/netns")
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "adetcd")
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			netns.DeleteNamed(e.Name())
		}
	}
}

// Close stops the server and deletes its namespace; the error is the
// namespace's deletion's.
func (s *Server) Close() error {
	s.etcd.Close()
	if err := netns.DeleteNamed(s.NS); err != nil {
		return fmt.Errorf("delete network namespace %s: %w", s.NS, err)
	}
	return nil
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(s.ClientConfig())
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// InProcessClient returns a client that talks to the server without a
// socket, so it keeps working while the server's namespace is cut off.
func (s *Server) InProcessClient(t testing.TB) *clientv3.Client {
	t.Helper()
	c := v3client.New(s.etcd.Server)
	t.Cleanup(func() { c.Close() })
	return c
}

// SetLoopback brings the loopback of the server's namespace up or down: down
// cuts every client off (as a partition would) while the server keeps running.
func (s *Server) SetLoopback(up bool) error {
	_, err := InNetns(s.NS, func() (struct{}, error) {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return struct{}{}, err
		}
		if up {
			return struct{}{}, netlink.LinkSetUp(lo)
		}
		return struct{}{}, netlink.LinkSetDown(lo)
	})
	return err
}

// ClientConfig is a client config whose connections are made in the
// server's namespace.
func (s *Server) ClientConfig() clientv3.Config {
	return clientv3.Config{
		Endpoints:   []string{s.Endpoint},
		DialTimeout: 5 * time.Second,
		// Notice a dead connection as the agent does: a ping after a
		// quiet interval (gRPC raises this one to its 10 s minimum), dead
		// when it has no answer in 5 s. A shorter wait took an in-process
		// etcd that the -race build of a busy machine stalled for dead.
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithContextDialer(NetnsDialer(s.NS))},
		Logger:               zap.NewNop(),
	}
}

// NetnsDialer returns a dialer whose sockets are created inside the named
// network namespace; a socket keeps the namespace it was created in.
func NetnsDialer(ns string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		// gRPC hands over "host:port" or a URL-ish "unix:…"/"http://…" target.
		if i := strings.Index(addr, "://"); i >= 0 {
			addr = addr[i+3:]
		}
		return InNetns(ns, func() (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		})
	}
}

// InNetns runs f on a thread switched into the named namespace.
func InNetns[T any](ns string, f func() (T, error)) (T, error) {
	return onThrowawayThread(func() (T, error) {
		var zero T
		target, err := netns.GetFromName(ns)
		if err != nil {
			return zero, fmt.Errorf("netns %s: %w", ns, err)
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			return zero, fmt.Errorf("enter netns %s: %w", ns, err)
		}
		return f()
	})
}

// onThrowawayThread runs f on a goroutine locked to its thread that never
// unlocks it: the runtime ends the thread with the goroutine, so a thread
// switched into another namespace never runs anything else.
func onThrowawayThread[T any](f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		v, err := f()
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// RefusingWatcher is a clientv3.Watcher whose every watch etcd cancels as
// soon as it starts, as a member without a leader does. Watches counts them.
type RefusingWatcher struct {
	clientv3.Watcher // the client's, for Close
	Watches          atomic.Int64
}

// Watch implements clientv3.Watcher.
func (w *RefusingWatcher) Watch(context.Context, string, ...clientv3.OpOption) clientv3.WatchChan {
	w.Watches.Add(1)
	ch := make(chan clientv3.WatchResponse, 1)
	ch <- clientv3.WatchResponse{Canceled: true, CancelReason: rpctypes.ErrNoLeader.Error()}
	close(ch)
	return ch
}
