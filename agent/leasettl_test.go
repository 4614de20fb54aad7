package agent

import (
	"context"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fakeLessor is the etcd client's Lease as far as the tap uses it: each
// KeepAlive gets a channel the test answers through and closes, as the
// client would. Any other request fails the test.
type fakeLessor struct {
	clientv3.Lease // nil: a call of anything else panics
	t              *testing.T
	calls          chan chan *clientv3.LeaseKeepAliveResponse
}

func (f *fakeLessor) KeepAlive(ctx context.Context, id clientv3.LeaseID) (<-chan *clientv3.LeaseKeepAliveResponse, error) {
	ch := make(chan *clientv3.LeaseKeepAliveResponse, clientv3.LeaseResponseChSize)
	f.calls <- ch
	return ch, nil
}

func (f *fakeLessor) TimeToLive(context.Context, clientv3.LeaseID, ...clientv3.LeaseOption) (*clientv3.LeaseTimeToLiveResponse, error) {
	f.t.Error("TimeToLive called: the time left must come from the keepalive answers")
	return nil, context.Canceled
}

// ttlHarness is a leaseTTL tapping a fakeLessor, on a clock the test moves
// (now).
type ttlHarness struct {
	t      *testing.T
	now    time.Time
	ttl    *leaseTTL
	fake   *fakeLessor
	lessor clientv3.Lease
}

func newTTLHarness(t *testing.T) *ttlHarness {
	h := &ttlHarness{t: t, now: time.Unix(1_700_000_000, 0)}
	h.ttl = &leaseTTL{now: func() time.Time { return h.now }}
	h.fake = &fakeLessor{t: t, calls: make(chan chan *clientv3.LeaseKeepAliveResponse, 4)}
	h.lessor = h.ttl.tap(h.fake)
	return h
}

// check checks the time left on lease id.
func (h *ttlHarness) check(step string, id clientv3.LeaseID, want time.Duration, wantOK bool) {
	h.t.Helper()
	if got, ok := h.ttl.left(id); got != want || ok != wantOK {
		h.t.Errorf("%s: left(%x) = %v, %v; want %v, %v", step, id, got, ok, want, wantOK)
	}
}

// keepAlive starts a KeepAlive of id and returns the client's side (answer,
// close) and the caller's.
func (h *ttlHarness) keepAlive(ctx context.Context, id clientv3.LeaseID) (chan *clientv3.LeaseKeepAliveResponse, <-chan *clientv3.LeaseKeepAliveResponse) {
	h.t.Helper()
	out, err := h.lessor.KeepAlive(ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return <-h.fake.calls, out
}

// answer sends an answer and waits for the caller to get it.
func (h *ttlHarness) answer(in chan *clientv3.LeaseKeepAliveResponse, out <-chan *clientv3.LeaseKeepAliveResponse, id clientv3.LeaseID, secs int64) {
	h.t.Helper()
	in <- &clientv3.LeaseKeepAliveResponse{ID: id, TTL: secs}
	select {
	case got := <-out:
		if got.ID != id || got.TTL != secs {
			h.t.Errorf("the caller got %x TTL %d, want %x TTL %d", got.ID, got.TTL, id, secs)
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("an answer was not passed on")
	}
}

// closed waits for the caller's channel to close, after the client's.
func (h *ttlHarness) closed(out <-chan *clientv3.LeaseKeepAliveResponse) {
	h.t.Helper()
	select {
	case _, ok := <-out:
		if ok {
			h.t.Fatal("an answer after the client's channel closed")
		}
	case <-time.After(10 * time.Second):
		h.t.Fatal("the caller's channel did not close with the client's")
	}
}

// TestLeaseTTLFromKeepAlives: the time left on the lease is the TTL of the
// last keepalive answer less the time since, without a request to etcd; it
// is unknown for a lease no answer has come for, 0 once the client gives
// the lease up (and not when the caller lets it go), and an earlier
// KeepAlive's end does not touch a later one's answers. Every answer is
// passed on, and the channel closes when the client's does.
func TestLeaseTTLFromKeepAlives(t *testing.T) {
	h := newTTLHarness(t)
	check, keepAlive, answer, closed := h.check, h.keepAlive, h.answer, h.closed

	check("no answer yet", 0xa, 0, false)
	in, out := keepAlive(t.Context(), 0xa)
	check("kept alive, no answer yet", 0xa, 0, false)
	answer(in, out, 0xa, 30)
	check("answered", 0xa, 30*time.Second, true)
	check("another lease", 0xb, 0, false)
	check("no lease", 0, 0, false)
	h.now = h.now.Add(10 * time.Second)
	check("10 s later", 0xa, 20*time.Second, true)
	answer(in, out, 0xa, 30)
	check("renewed", 0xa, 30*time.Second, true)
	h.now = h.now.Add(45 * time.Second)
	check("unanswered for longer than the TTL", 0xa, 0, true)
	close(in) // the client gives up (its deadline, or a TTL 0 answer)
	closed(out)
	check("given up", 0xa, 0, true)

	// The manager's next lease; then it lets that one go (key deleted):
	// the lease has not run out, it counts down.
	ctx, cancel := context.WithCancel(t.Context())
	in, out = keepAlive(ctx, 0xb)
	check("new lease, no answer yet", 0xb, 0, false)
	check("old lease, given up", 0xa, 0, true)
	answer(in, out, 0xb, 60)
	cancel()
	close(in)
	closed(out)
	h.now = h.now.Add(20 * time.Second)
	check("let go", 0xb, 40*time.Second, true)

	// A KeepAlive of the same lease again, answered before the earlier
	// one's channel is closed by the client.
	in1, out1 := keepAlive(t.Context(), 0xc)
	answer(in1, out1, 0xc, 60)
	in2, out2 := keepAlive(t.Context(), 0xc)
	answer(in2, out2, 0xc, 60)
	close(in1)
	closed(out1)
	check("earlier call given up after a later one's answer", 0xc, 60*time.Second, true)
	close(in2)
	closed(out2)
	check("later call given up", 0xc, 0, true)
}

// TestLeaseTTLTapDropsWhenFull: as the etcd client does, an answer that
// finds the caller's channel full is dropped rather than waited on, so a
// caller that stops reading holds nothing up, and the channel still closes.
func TestLeaseTTLTapDropsWhenFull(t *testing.T) {
	ttl := &leaseTTL{}
	fake := &fakeLessor{t: t, calls: make(chan chan *clientv3.LeaseKeepAliveResponse, 1)}
	out, err := ttl.tap(fake).KeepAlive(t.Context(), 0xa)
	if err != nil {
		t.Fatal(err)
	}
	in := <-fake.calls
	for i := range 3 * cap(in) {
		select {
		case in <- &clientv3.LeaseKeepAliveResponse{ID: 0xa, TTL: int64(i + 1)}:
		case <-time.After(10 * time.Second):
			t.Fatalf("answer %d: the tap stopped reading the client's channel", i)
		}
	}
	close(in)
	// The tap has read everything once it took the client's close for
	// the lease's end.
	deadline := time.Now().Add(10 * time.Second)
	for d, ok := ttl.left(0xa); !ok || d != 0; d, ok = ttl.left(0xa) {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the client gave up: left = %v, %v; want 0, true", d, ok)
		}
		time.Sleep(time.Millisecond)
	}
	n := 0
	for range out {
		n++
	}
	if n != cap(in) {
		t.Errorf("the caller got %d answers, want %d (the channel's size; the rest dropped)", n, cap(in))
	}
}

// TestLeaseTTLFromDirectRenewals: a renewal the lease manager sent itself,
// when the client's keepalive went unanswered, gives the time left as a
// keepalive answer does; the client giving that keepalive up afterwards
// does not take it back, and the next keepalive answer counts again. A
// direct answer that the lease is gone gives 0. Before, the time left
// counted down from the client's last answer to 0 while the lease was
// renewed directly.
func TestLeaseTTLFromDirectRenewals(t *testing.T) {
	h := newTTLHarness(t)
	check := h.check
	keepAlive := func() (chan *clientv3.LeaseKeepAliveResponse, <-chan *clientv3.LeaseKeepAliveResponse) {
		t.Helper()
		return h.keepAlive(t.Context(), 0xa)
	}
	answer := func(in chan *clientv3.LeaseKeepAliveResponse, out <-chan *clientv3.LeaseKeepAliveResponse, secs int64) {
		t.Helper()
		h.answer(in, out, 0xa, secs)
	}
	giveUp := func(in chan *clientv3.LeaseKeepAliveResponse, out <-chan *clientv3.LeaseKeepAliveResponse) {
		t.Helper()
		close(in)
		h.closed(out)
	}

	in, out := keepAlive()
	answer(in, out, 30)
	h.now = h.now.Add(25 * time.Second) // the client's next keepalive unanswered
	check("keepalive overdue", 0xa, 5*time.Second, true)
	h.ttl.renewed(0xa, 30*time.Second)
	check("renewed directly", 0xa, 30*time.Second, true)
	check("another lease", 0xb, 0, false)
	h.now = h.now.Add(10 * time.Second)
	giveUp(in, out) // 30 s after its last answer
	check("the client gave the keepalive up after a direct renewal", 0xa, 20*time.Second, true)

	in, out = keepAlive()
	answer(in, out, 30)
	check("kept alive again", 0xa, 30*time.Second, true)
	giveUp(in, out)
	check("given up after its own answer", 0xa, 0, true)

	h.ttl.renewed(0xa, 30*time.Second)
	h.ttl.renewed(0xa, 0)
	check("gone, by a direct renewal's answer", 0xa, 0, true)
}

// TestLeaseTTLClockCountsSuspend: the time left is read from the clock that
// goes on while the machine is suspended (boottime), as etcd's does, so
// that after a sleep past the lease's end it is 0, not what it was when the
// machine went to sleep. Before, it was read from time.Now, whose
// differences are taken on Go's monotonic clock, which stands still then.
func TestLeaseTTLClockCountsSuspend(t *testing.T) {
	got, want := (&leaseTTL{}).clock(), boottime.Now()
	if d := want.Sub(got).Abs(); d > time.Second {
		t.Fatalf("leaseTTL's clock reads %v, %v from boottime's %v", got, d, want)
	}
}

// TestLeaseTTLAnswersOutOfOrder: the lease manager sends its renewals one
// after another without waiting for the answers while etcd is slow, each on
// a stream of its own, beside the client's keepalives; their answers may
// come in another order than they were sent. An answer that leaves the
// lease less time than one before it takes nothing back: etcd holds the
// lease at least until the latest end any answer proved. Before 2026-12-07
// the last answer counted, so an earlier renewal answered late made
// /readyz 503 before the end a later one had proved.
func TestLeaseTTLAnswersOutOfOrder(t *testing.T) {
	h := newTTLHarness(t)
	h.ttl.renewed(0xa, 10*time.Second)
	h.ttl.renewed(0xa, 6*time.Second) // sent before, answered after
	h.check("a direct renewal answered after a later one", 0xa, 10*time.Second, true)

	in, out := h.keepAlive(t.Context(), 0xa)
	h.ttl.answered(0xa, h.now.Add(-5*time.Second))
	h.answer(in, out, 0xa, 10)
	h.check("a keepalive sent before that renewal, answered after it", 0xa, 10*time.Second, true)
	close(in)
	h.closed(out)
	h.check("the client gave up a keepalive that proved nothing more", 0xa, 10*time.Second, true)

	h.ttl.renewed(0xb, 3*time.Second)
	h.check("another lease", 0xb, 3*time.Second, true)
	h.ttl.renewed(0xb, 0)
	h.check("gone, by a direct renewal's answer", 0xb, 0, true)
}
