package agent

import (
	"context"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
)

// leaseTTL follows the time left on our etcd lease from the answers to the
// keepalives the lease manager sends anyway (each carries the lease's TTL),
// so that reporting it costs etcd nothing: a TimeToLive request per scrape
// would be one request per agent and scrape interval, 67 a second for 1000
// agents scraped every 15 s.
//
// It sees the answers through follow, which gives the etcd client a Lease
// of its own: the manager calls KeepAlive on the client it was given and
// reports nothing of the answers. When a keepalive is overdue the manager
// renews the lease itself, outside the client, and reports those answers
// (renewed).
//
// etcd counts a renewed TTL from when the keepalive reached it, so the
// lease's end is counted from when the keepalive was sent, the last moment
// known to be before that, not from when its answer came: with etcd a
// second away each way, an answer carrying a TTL of 10 s leaves 8 s, not
// 10. The Lease given to the client sends its keepalives through a stream
// that notes when each was sent, and etcd answers them in order.
//
// Time is read from boottime.Now, which goes on while the machine is
// suspended, as etcd's clock does: after a sleep past the lease's end, the
// time left is 0, not what it was when the machine went to sleep.
type leaseTTL struct {
	now func() time.Time // boottime.Now except in tests
	// changed, when set, is called after each change of the lease's end
	// (an answer recorded, the client giving the lease up), outside mu:
	// health.leaseTimeChanged, which judges the readiness again and sets
	// its timer for the new end.
	changed func()

	mu    sync.Mutex
	calls uint64           // KeepAlive calls so far, which number them
	id    clientv3.LeaseID // the lease of the last answer; 0 before any
	from  uint64           // the call that answer came through; 0 for renewed's
	end   time.Time        // when that lease runs out unless renewed
	// sent is, for each lease, when the keepalive whose answer came last
	// was sent, by clock.
	sent map[clientv3.LeaseID]time.Time
}

// follow gives c a Lease of its own, made as clientv3.NewLease makes the
// client's (c's dial timeout is etcdConnectTimeout, see connectEtcd), whose
// keepalive streams note when each request was sent, and taps it.
func (t *leaseTTL) follow(c *clientv3.Client) {
	old := c.Lease
	c.Lease = t.tap(clientv3.NewLeaseFromLeaseClient(&sentNoter{LeaseClient: clientv3.RetryLeaseClient(c), t: t}, c, etcdConnectTimeout+time.Second))
	// The client's own has started nothing yet: Close only releases it.
	if old != nil {
		_ = old.Close()
	}
}

// tap returns l, whose KeepAlive answers t records on their way.
func (t *leaseTTL) tap(l clientv3.Lease) clientv3.Lease { return &ttlTap{Lease: l, t: t} }

// left is the time left on the etcd lease id as of the last keepalive answer,
// 0 once the etcd client gave the lease up, and false when no answer for id
// has come since the lease was last kept alive.
func (t *leaseTTL) left(id clientv3.LeaseID) (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id == 0 || id != t.id {
		return 0, false
	}
	return max(t.end.Sub(t.clock()), 0), true
}

func (t *leaseTTL) clock() time.Time {
	if t.now != nil {
		return t.now()
	}
	return boottime.Now()
}

func (t *leaseTTL) call() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls++
	return t.calls
}

// kept records an answer of the KeepAlive call numbered call: the TTL it
// carries counts from when its keepalive was sent, if noted, else from now.
func (t *leaseTTL) kept(call uint64, resp *clientv3.LeaseKeepAliveResponse) {
	t.mu.Lock()
	from, ok := t.sent[resp.ID]
	if !ok {
		from = t.clock()
	}
	t.proved(resp.ID, call, from.Add(time.Duration(resp.TTL)*time.Second))
	t.mu.Unlock()
	t.tell()
}

// proved records that an answer that came through call (0 for renewed's)
// proved lease id alive until end. The lease manager's renewals and the
// client's keepalives go on streams of their own, and with etcd slow the
// manager sends one before the answer to the last has come, so answers
// come in any order: one that proves less than an answer before it takes
// nothing back, as etcd holds the lease until the latest end proved. t.mu
// is held.
func (t *leaseTTL) proved(id clientv3.LeaseID, call uint64, end time.Time) {
	if id == t.id && end.Before(t.end) {
		return
	}
	t.id, t.from, t.end = id, call, end
}

// answered notes that the answer to a keepalive of lease id sent at sent
// has come, before the etcd client passes it on.
func (t *leaseTTL) answered(id clientv3.LeaseID, sent time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.sent == nil {
		t.sent = map[clientv3.LeaseID]time.Time{}
	}
	t.sent[id] = sent
}

// sentAt is when the keepalive of lease id whose answer came last was sent,
// by clock, if noted. Its signature is
// subnet.ManagerConfig.KeepAliveSent's.
func (t *leaseTTL) sentAt(id int64) (time.Time, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sent, ok := t.sent[clientv3.LeaseID(id)]
	return sent, ok
}

// tell calls changed, if set; t.mu is not held.
func (t *leaseTTL) tell() {
	if t.changed != nil {
		t.changed()
	}
}

// renewed records the answer to a renewal the lease manager sent itself, not
// through KeepAlive: lease id has left to run, none when 0 or less (etcd
// said that it is gone). It came through no call, so no earlier call's end
// takes it back. Its signature is subnet.ManagerConfig.OnLeaseRenewed's.
func (t *leaseTTL) renewed(id int64, left time.Duration) {
	t.mu.Lock()
	if left <= 0 {
		t.id, t.from, t.end = clientv3.LeaseID(id), 0, t.clock()
	} else {
		t.proved(clientv3.LeaseID(id), 0, t.clock().Add(left))
	}
	t.mu.Unlock()
	t.tell()
}

// ended records that the etcd client closed the KeepAlive call numbered call
// on its own: the lease expired, was revoked, or went unanswered for its
// TTL. Unless a later call has been answered since, the lease is taken as
// run out.
func (t *leaseTTL) ended(call uint64) {
	t.mu.Lock()
	ran := t.from == call
	if ran {
		t.end = t.clock()
	}
	t.mu.Unlock()
	if ran {
		t.tell()
	}
}

// ttlTap is a clientv3.Lease whose KeepAlive answers go through t.
type ttlTap struct {
	clientv3.Lease
	t *leaseTTL
}

// KeepAlive is the etcd client's, with every answer recorded before it is
// passed on. As the client does, an answer that finds the channel full is
// dropped, so a caller that stops reading blocks nothing; the channel
// closes when the client's does.
func (k *ttlTap) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	in, err := k.Lease.KeepAlive(ctx, id)
	if err != nil {
		return in, err
	}
	call := k.t.call()
	out := make(chan *clientv3.LeaseKeepAliveResponse, cap(in))
	go func() {
		defer close(out)
		for resp := range in {
			k.t.kept(call, resp)
			select {
			case out <- resp:
			default:
			}
		}
		// The client closes the channel at ctx's end too: then the
		// caller let the lease go, and it has not run out.
		if ctx.Err() == nil {
			k.t.ended(call)
		}
	}()
	return out, nil
}

// sentNoter is the etcd client's pb.LeaseClient, whose keepalive streams
// note when each request was sent.
type sentNoter struct {
	etcdserverpb.LeaseClient
	t *leaseTTL
}

func (n *sentNoter) LeaseKeepAlive(ctx context.Context, opts ...grpc.CallOption) (etcdserverpb.Lease_LeaseKeepAliveClient, error) {
	s, err := n.LeaseClient.LeaseKeepAlive(ctx, opts...)
	if err != nil {
		return s, err
	}
	return &sentNotingStream{Lease_LeaseKeepAliveClient: s, t: n.t}, nil
}

// sentNotingStream is a keepalive stream of the etcd client. etcd answers
// each request on it, in order (a lease it no longer has with a TTL of 0),
// so the answer Recv returns is to the oldest request not yet answered.
// The client sends from one goroutine and receives on another.
type sentNotingStream struct {
	etcdserverpb.Lease_LeaseKeepAliveClient
	t *leaseTTL

	mu   sync.Mutex
	sent []time.Time // of the requests not answered yet, oldest first
}

func (s *sentNotingStream) Send(r *etcdserverpb.LeaseKeepAliveRequest) error {
	s.mu.Lock()
	s.sent = append(s.sent, s.t.clock())
	s.mu.Unlock()
	err := s.Lease_LeaseKeepAliveClient.Send(r)
	if err != nil {
		// Not sent, or the stream is broken: nothing more comes on it.
		s.mu.Lock()
		s.sent = s.sent[:len(s.sent)-1]
		s.mu.Unlock()
	}
	return err
}

func (s *sentNotingStream) Recv() (*etcdserverpb.LeaseKeepAliveResponse, error) {
	resp, err := s.Lease_LeaseKeepAliveClient.Recv()
	if err != nil {
		return resp, err
	}
	s.mu.Lock()
	var sent time.Time
	if len(s.sent) > 0 {
		sent = s.sent[0]
		s.sent = s.sent[1:]
	}
	s.mu.Unlock()
	if !sent.IsZero() {
		s.t.answered(clientv3.LeaseID(resp.ID), sent)
	}
	return resp, nil
}
