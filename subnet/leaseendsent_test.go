package subnet_test

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
)

// TestLeaseExpiryCountedFromKeepAliveSent: the expiry Run judges the lease
// by, when the etcd client's keepalives are answered, counts from when the
// keepalive was sent (ManagerConfig.KeepAliveSent), as etcd counts the TTL
// from its arrival, not from when the answer came. Here etcd's answers come
// 3 s late; after the first answer to a keepalive of a 6 s lease etcd stops
// answering, and the lease is reported lost naming its expiry: at most a
// TTL after the last keepalive answered was sent (the time is named to the
// second, cut, so never later). Before 2026-12-07 the expiry counted from
// the answer, 3 s or more later than etcd's end of the lease, and OWN LEASE
// LOST came that much later.
func TestLeaseExpiryCountedFromKeepAliveSent(t *testing.T) {
	const (
		ttl         = 6 * time.Second
		answersLate = 3 * time.Second
	)
	e := newEnv(t, net16)
	n := &sendNoter{now: time.Now}
	var slow atomic.Bool // answers late from Run on; Acquire's come at once
	cli := e.slowClient(t, n, func() time.Duration {
		if slow.Load() {
			return answersLate
		}
		return 0
	})
	var lost lostReasons
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl, PreviousSubnet: netip.MustParsePrefix("10.244.1.0/24"),
		Clock:         time.Now,
		OnLeaseState:  lost.record,
		KeepAliveSent: n.sentAt,
	})
	acquire(t, m)
	slow.Store(true)
	run(t, m)
	e.silentOnceAnswered(t, n, 15*time.Second)
	r, at := lostExpiry(t, &lost, 40*time.Second)
	ref, _ := n.last()
	// The wall clock read for the message and the test's may differ by a
	// moment: half a second is allowed.
	if late := at.Sub(ref.Add(ttl)); late > 500*time.Millisecond {
		t.Fatalf("lease of %v whose keepalives are answered %v late reported lost naming its expiry %v after a TTL from the last keepalive answered was sent, want at most that: counted from the answer, not from the keepalive etcd counts from: %q",
			ttl, answersLate, late.Round(time.Millisecond), r)
	}
	t.Logf("expiry named %s, last keepalive answered sent %s: %q", at.Format(time.RFC3339), ref.Format(time.RFC3339Nano), r[0])
}

// sentAt has the signature of subnet.ManagerConfig.KeepAliveSent.
func (n *sendNoter) sentAt(id int64) (time.Time, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	at, ok := n.answered[id]
	return at, ok
}
