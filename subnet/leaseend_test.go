package subnet_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// TestLeaseLostSoonAfterItsEnd: etcd stops answering (its loopback down: a
// partition, or a member without quorum holding every request) while Run
// holds a lease of 3 s. The lease ends at etcd at most a TTL after the last
// keepalive answered was sent; Run reports it lost (OWN LEASE LOST) at most
// a renewal's wait (2 s for this TTL) and the leader check (1 s) after
// that, here allowed 1.5 s more for a busy machine. Before 2026-12-07 the
// expiry was compared every 5 s and each renewal waited 5 s and a second,
// whatever the TTL: about 11 s after the lease's end.
func TestLeaseLostSoonAfterItsEnd(t *testing.T) {
	const (
		ttl   = 3 * time.Second
		bound = 2*time.Second + time.Second + 1500*time.Millisecond
	)
	e := newEnv(t, net16)
	n := &sendNoter{now: time.Now}
	cli := e.slowClient(t, n, func() time.Duration { return 0 })
	var (
		lost   lostReasons
		lostAt atomic.Pointer[time.Time]
	)
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl, PreviousSubnet: netip.MustParsePrefix("10.244.1.0/24"),
		Clock: time.Now,
		OnLeaseState: func(held bool, reason string) {
			now := time.Now()
			// The reason first: the test reads it once lostAt is set.
			lost.record(held, reason)
			if !held && lostAt.Load() == nil {
				lostAt.Store(&now)
			}
		},
	})
	acquire(t, m)
	run(t, m)
	e.silentOnceAnswered(t, n, 10*time.Second)
	eventuallyWithin(t, 40*time.Second, "lease reported lost", func() error {
		if lostAt.Load() == nil {
			return errors.New("still held")
		}
		return nil
	})
	ref, _ := n.last()
	after := lostAt.Load().Sub(ref.Add(ttl))
	r := lost.get()
	if !strings.Contains(r[0], "went unconfirmed past its expiry") {
		t.Errorf("lost: %q, want it unconfirmed past its expiry", r)
	}
	if after > bound {
		t.Fatalf("lease of %v reported lost %v after its end (a TTL after the last keepalive answered was sent), want at most %v: %q",
			ttl, after.Round(time.Millisecond), bound, r)
	}
	t.Logf("reported lost %v after the lease's end: %q", after.Round(time.Millisecond), r[0])
}

// silentOnceAnswered waits, up to within, for a keepalive that n follows to
// be answered, then silences e's etcd (its loopback down) for the rest of
// the test.
func (e *env) silentOnceAnswered(t *testing.T, n *sendNoter, within time.Duration) {
	t.Helper()
	eventuallyWithin(t, within, "a keepalive answered", func() error {
		if _, ok := n.last(); !ok {
			return errors.New("none yet")
		}
		return nil
	})
	if err := e.srv.SetLoopback(false); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.srv.SetLoopback(true) })
}

// lostExpiry waits, up to within, for the lease to be reported lost, and
// returns the reasons and the expiry the first names: "etcd lease …
// went unconfirmed past its expiry (<RFC 3339 time>): …".
func lostExpiry(t *testing.T, lost *lostReasons, within time.Duration) ([]string, time.Time) {
	t.Helper()
	var r []string
	eventuallyWithin(t, within, "lease reported lost", func() error {
		if r = lost.get(); len(r) == 0 {
			return errors.New("still held")
		}
		return nil
	})
	expiry := regexp.MustCompile(`^etcd lease [0-9a-f]+ went unconfirmed past its expiry \(([^)]+)\): `).FindStringSubmatch(r[0])
	if expiry == nil {
		t.Fatalf("lost: %q, want it unconfirmed past its expiry", r)
	}
	at, err := time.Parse(time.RFC3339, expiry[1])
	if err != nil {
		t.Fatal(err)
	}
	return r, at
}

// slowClient returns a client of e's etcd whose connections carry etcd's
// answers late by late() (etcdtest.DelayCopy), and whose lease keepalive
// streams n follows.
func (e *env) slowClient(t *testing.T, n *sendNoter, late func() time.Duration) *clientv3.Client {
	t.Helper()
	return e.slowBothWays(t, n, func() time.Duration { return 0 }, late)
}

// slowBothWays is slowClient whose connections also carry what the client
// sends late, by toEtcd().
func (e *env) slowBothWays(t *testing.T, n *sendNoter, toEtcd, late func() time.Duration) *clientv3.Client {
	t.Helper()
	dial := etcdtest.NetnsDialer(e.srv.NS)
	cfg := e.srv.ClientConfig()
	cfg.DialOptions = []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			up, err := dial(ctx, addr)
			if err != nil {
				return nil, err
			}
			c, p := net.Pipe()
			go etcdtest.DelayCopy(up, p, toEtcd)
			go etcdtest.DelayCopy(p, up, late)
			return c, nil
		}),
		grpc.WithChainStreamInterceptor(n.intercept),
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// sendNoter follows the lease keepalive streams of a client, of the etcd
// client's Lease and of Run's own renewals alike: when each keepalive was
// sent, by now, which were answered, and when. etcd answers the keepalives
// of a stream in order.
type sendNoter struct {
	now func() time.Time

	mu       sync.Mutex
	answered map[int64]time.Time // when the keepalive of each lease answered last was sent
	latest   time.Time           // when the latest keepalive answered was sent
	got      []answer            // the answers with the lease alive, in the order they came
}

type answer struct {
	sent, at time.Time
	ttl      time.Duration
}

// answers returns the answers with the lease alive so far.
func (n *sendNoter) answers() []answer {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.got)
}

func (n *sendNoter) intercept(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	s, err := streamer(ctx, desc, cc, method, opts...)
	if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
		return s, err
	}
	return &notedStream{ClientStream: s, n: n}, nil
}

// last is when the latest keepalive answered was sent, false before any.
func (n *sendNoter) last() (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.latest, !n.latest.IsZero()
}

type notedStream struct {
	grpc.ClientStream
	n *sendNoter

	mu   sync.Mutex
	sent []time.Time // of the keepalives not answered yet, oldest first
}

func (s *notedStream) SendMsg(m any) error {
	s.mu.Lock()
	s.sent = append(s.sent, s.n.now())
	s.mu.Unlock()
	err := s.ClientStream.SendMsg(m)
	if err != nil {
		s.mu.Lock()
		s.sent = s.sent[:len(s.sent)-1]
		s.mu.Unlock()
	}
	return err
}

func (s *notedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	resp, ok := m.(*etcdserverpb.LeaseKeepAliveResponse)
	if err != nil || !ok {
		return err
	}
	got := s.n.now()
	s.mu.Lock()
	if len(s.sent) == 0 {
		s.mu.Unlock()
		return nil
	}
	at := s.sent[0]
	s.sent = s.sent[1:]
	s.mu.Unlock()
	s.n.mu.Lock()
	defer s.n.mu.Unlock()
	if s.n.answered == nil {
		s.n.answered = map[int64]time.Time{}
	}
	s.n.answered[resp.ID] = at
	if resp.TTL > 0 && at.After(s.n.latest) {
		s.n.latest = at
	}
	if resp.TTL > 0 {
		s.n.got = append(s.n.got, answer{sent: at, at: got, ttl: time.Duration(resp.TTL) * time.Second})
	}
	return nil
}
