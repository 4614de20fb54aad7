package subnet_test

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestLeaseRenewedInTimeWithEtcdSlow: etcd is 2 s away each way (a round
// trip of 4 s, two fifths of the 10 s TTL) for 2.5 TTLs. Every answer to a
// renewal of the lease, the etcd client's keepalives and Run's own, comes
// before the end that the answers before it proved (the send of each plus
// the TTL it carried, as the agent's readiness counts it); Run never finds
// its expiry passed ("but etcd renewed it") and never reports the lease
// lost. The etcd client sends its next keepalive a third of the TTL after
// an answer, so its answer came 2 round trips and a third of the TTL, 11.3
// s, after the last send; before 2026-12-07 Run renewed the lease itself
// only a third and a sixth of the TTL and a second after an answer, waiting
// for each renewal's answer, and an answer came up to about 2 s past the
// end. Now Run sends a renewal a third of the TTL and a second after the
// last send, whether the answers to those before it came or not.
func TestLeaseRenewedInTimeWithEtcdSlow(t *testing.T) {
	const (
		eachWay = 2 * time.Second
		ttl     = 10 * time.Second
		hold    = 5 * ttl / 2
	)
	e := newEnv(t, net16)
	var delay atomic.Int64
	late := func() time.Duration { return time.Duration(delay.Load()) }
	n := &sendNoter{now: time.Now}
	cli := e.slowBothWays(t, n, late, late)
	var (
		lost    lostReasons
		logMu   sync.Mutex
		expired []string
	)
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net, subnet.ManagerConfig{
		PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: ttl, PreviousSubnet: netip.MustParsePrefix("10.244.1.0/24"),
		Clock:         time.Now,
		OnLeaseState:  lost.record,
		KeepAliveSent: n.sentAt,
		Logger: funcr.New(func(_, args string) {
			if strings.Contains(args, "last known expiry passed") {
				logMu.Lock()
				defer logMu.Unlock()
				expired = append(expired, args)
			}
		}, funcr.Options{}),
	})
	acquire(t, m)
	run(t, m)
	eventuallyWithin(t, ttl, "a keepalive answered", func() error {
		if len(n.answers()) == 0 {
			return fmt.Errorf("none yet")
		}
		return nil
	})
	delay.Store(int64(eachWay))
	slowed := time.Now()
	eventuallyWithin(t, 2*hold, fmt.Sprintf("etcd %v away each way for %v", eachWay, hold), func() error {
		if r := lost.get(); len(r) > 0 {
			t.Fatalf("lease reported lost: %q", r)
		}
		if since := time.Since(slowed); since < hold {
			return fmt.Errorf("slow for %v", since)
		}
		return nil
	})
	logMu.Lock()
	if len(expired) > 0 {
		t.Errorf("etcd %v away each way, TTL %v: Run logged %q", eachWay, ttl, expired)
	}
	logMu.Unlock()
	got := n.answers()
	var end time.Time
	renewals := 0
	for _, r := range got {
		if r.at.After(slowed) {
			renewals++
			if r.at.After(end) {
				t.Errorf("etcd %v away each way, TTL %v: a renewal sent %v after etcd became slow was answered %v past the lease's end as counted from the answers before it",
					eachWay, ttl, r.sent.Sub(slowed).Round(time.Millisecond), r.at.Sub(end).Round(time.Millisecond))
			}
		}
		end = laterOf(end, r.sent.Add(r.ttl))
	}
	if renewals < 3 {
		t.Fatalf("%d renewals answered while etcd was slow for %v, want at least 3", renewals, hold)
	}
	t.Logf("%d renewals answered while etcd was slow for %v (TTL %v): %.1f per TTL", renewals, hold, ttl, float64(renewals)*float64(ttl)/float64(hold))
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
