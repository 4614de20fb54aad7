package main

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/etcdtest"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestTimeoutBoundsLoginAndRequest: --timeout bounds the whole command with
// --etcd-username, the login and the request together. etcd, slow, answers
// the login late in --timeout and then hangs: agentctl waited a --timeout
// for each, so it answered after the login's wait, --timeout and the probe
// of the silent etcd (2 s): 8.5 s with --timeout=4s, not 6 s.
//
// etcd runs in a network namespace of the test's; agentctl reaches it
// through a proxy on a unix socket that holds every byte (as a hung etcd
// answers nothing) until loginWait has passed, and again once the login
// is done.
func TestTimeoutBoundsLoginAndRequest(t *testing.T) {
	const timeout, loginWait = 4 * time.Second, 2500 * time.Millisecond
	srv := etcdtest.Start(t)
	g := &gate{opened: make(chan struct{})}
	ep := proxy(t, g, func(ctx context.Context) (net.Conn, error) {
		return etcdtest.NetnsDialer(srv.NS)(ctx, "127.0.0.1:2379")
	})
	var loggedIn time.Duration
	var start time.Time
	dial := func(cfg *agent.Config, timeout time.Duration) (*clientv3.Client, etcdDo, func(), error) {
		cli, do, closeFn, err := dialEtcd(cfg, timeout)
		loggedIn = time.Since(start)
		g.shut()
		return cli, do, closeFn, err
	}
	args := []string{"--timeout=" + timeout.String(), "--etcd-endpoints=" + ep, "--etcd-username=u", "--etcd-password=p", "leases"}
	var out, errOut bytes.Buffer
	start = time.Now()
	time.AfterFunc(loginWait, g.open) // etcd answers late
	code := run(context.Background(), args, &out, &errOut, dial)
	took := time.Since(start)
	t.Logf("$ agentctl %s\n%s%s(exit %d, %v; logged in after %v)", strings.Join(args, " "), out.String(), errOut.String(),
		code, took.Round(10*time.Millisecond), loggedIn.Round(10*time.Millisecond))
	if loggedIn < loginWait {
		t.Fatalf("logged in after %v; want the login to wait for etcd, %v", loggedIn, loginWait)
	}
	if code != 1 || !strings.Contains(errOut.String(), "etcd did not answer within "+timeout.String()) {
		t.Errorf("exit %d, want 1 saying etcd did not answer within %v", code, timeout)
	}
	// --timeout, then the probe's wait for an answer.
	if limit := timeout + 2*time.Second + time.Second; took > limit {
		t.Errorf("took %v with --timeout=%v; want at most %v (--timeout, then the probe)", took.Round(10*time.Millisecond), timeout, limit)
	}
}

// gate passes bytes while open; shut, it holds them.
type gate struct {
	mu     sync.Mutex
	opened chan struct{} // closed while open
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
	default:
		close(g.opened)
	}
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.opened:
		g.opened = make(chan struct{})
	default:
	}
}

// wait returns once g is open (true) or ctx is done (false).
func (g *gate) wait(ctx context.Context) bool {
	g.mu.Lock()
	ch := g.opened
	g.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// proxy serves a unix socket in a temporary directory, connecting each
// connection it takes to upstream and copying bytes each way through g. It
// returns the socket's endpoint; the test's end closes it all.
func proxy(t *testing.T, g *gate, upstream func(context.Context) (net.Conn, error)) string {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		l.Close()
		wg.Wait()
	})
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		defer dst.Close()
		defer src.Close()
		b := make([]byte, 32<<10)
		for {
			n, err := src.Read(b)
			if n > 0 && !g.wait(ctx) {
				return
			}
			if _, werr := dst.Write(b[:n]); werr != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := upstream(ctx)
			if err != nil {
				c.Close()
				continue
			}
			context.AfterFunc(ctx, func() {
				c.Close()
				up.Close()
			})
			wg.Add(2)
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	return "unix://" + sock
}
