package agent

import (
	"context"
	"sync"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseTTL follows the time left on our etcd lease from the answers to the
// keepalives the lease manager sends anyway (each carries the lease's TTL),
// so that reporting it costs etcd nothing: a TimeToLive request per scrape
// would be one request per agent and scrape interval, 67 a second for 1000
// agents scraped every 15 s.
//
// It sees the answers through tap, which wraps the etcd client's Lease: the
// manager calls KeepAlive on the client it was given and reports nothing
// of the answers. When a keepalive is overdue the manager renews the lease
// itself, outside the client, and reports those answers (renewed).
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

// kept records an answer of the KeepAlive call numbered call.
func (t *leaseTTL) kept(call uint64, resp *clientv3.LeaseKeepAliveResponse) {
	t.mu.Lock()
	t.id, t.from = resp.ID, call
	t.end = t.clock().Add(time.Duration(resp.TTL) * time.Second)
	t.mu.Unlock()
	t.tell()
}

// tell calls changed, if set; t.mu is not held.
func (t *leaseTTL) tell() {
	if t.changed != nil {
		t.changed()
	}
}

// renewed records the answer to a renewal the lease manager sent itself, not
// through KeepAlive: lease id has left to run, none when 0 or less. It came
// through no call, so no earlier call's end takes it back. Its signature is
// subnet.ManagerConfig.OnLeaseRenewed's.
func (t *leaseTTL) renewed(id int64, left time.Duration) {
	t.mu.Lock()
	t.id, t.from = clientv3.LeaseID(id), 0
	t.end = t.clock().Add(max(left, 0))
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
