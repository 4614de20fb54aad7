package subnet_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// TestDirectRenewalCountedFromSent: the time left that a renewal Run sends
// itself reports (OnLeaseRenewed, which /readyz, STATUS= and
// agentd_lease_ttl_remaining_seconds go by) counts from when the renewal
// was sent, as etcd counts the TTL from its arrival, not from when the
// answer came. Here the client's keepalives go unanswered, so Run renews
// the lease directly, and every answer on a lease stream comes back a
// second late: the TTL of 6 s leaves at most 5 s (before 2026-12-07: 6 s,
// the lease held a second past etcd's end of it, as far as the agent
// could tell).
func TestDirectRenewalCountedFromSent(t *testing.T) {
	const (
		ttl         = 6 * time.Second
		answersLate = time.Second
	)
	e := newEnv(t, net16)
	cfg := e.srv.ClientConfig()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		s, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil || method != "/etcdserverpb.Lease/LeaseKeepAlive" {
			return s, err
		}
		return lateAnswers{ClientStream: s, late: answersLate}, nil
	}))
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	cli.Lease = silentLessor{Lease: cli.Lease}
	var (
		mu      sync.Mutex
		renewed []time.Duration
	)
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl, PreviousSubnet: netip.MustParsePrefix("10.244.1.0/24"),
		OnLeaseRenewed: func(_ int64, left time.Duration) {
			mu.Lock()
			defer mu.Unlock()
			renewed = append(renewed, left)
		},
	})
	acquire(t, m)
	run(t, m)
	// The first direct renewal is sent TTL/3 + TTL/6 + 1 s (4 s) after
	// the grant.
	eventuallyWithin(t, 3*ttl, "a direct renewal reported", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(renewed) == 0 {
			return fmt.Errorf("no renewal reported")
		}
		return nil
	})
	mu.Lock()
	left := renewed[0]
	mu.Unlock()
	if left > ttl-answersLate || left <= 0 {
		t.Fatalf("a direct renewal of a %v lease answered %v late reported %v left, want more than 0 and at most %v: counted from the answer, not from the renewal etcd counts from",
			ttl, answersLate, left, ttl-answersLate)
	}
	t.Logf("%v left reported (TTL %v, answers %v late)", left, ttl, answersLate)
}

// lateAnswers is a client stream whose every message received comes late
// after it arrived.
type lateAnswers struct {
	grpc.ClientStream
	late time.Duration
}

func (s lateAnswers) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		select {
		case <-time.After(s.late):
		case <-s.Context().Done():
		}
	}
	return err
}
