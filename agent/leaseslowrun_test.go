package agent

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/etcdtest"
)

// TestLeaseKeptReadyWithEtcdSlow: etcd answers, but 2 s away each way (a
// round trip of 4 s, two fifths of the 10 s TTL). The agent that run
// assembles stays ready for 2.5 TTLs, and its lease manager never finds
// the lease's last known expiry passed. Both count the lease's end from the
// send of the keepalive answered last; the etcd client sends its next one
// a third of the TTL after that answer, so with this round trip its answer
// came 11.3 s after the last one's send. Before 2026-12-07 /readyz was
// therefore 503 (leaseRanOut) for about 1.5 s of each renewal cycle, and
// the manager logged "our etcd lease's last known expiry passed … but etcd
// renewed it" once a cycle; now the manager sends a renewal of its own at
// most a third of the TTL and a second after the last send, without
// waiting for the answers to those before it.
//
// It also fails without run's KeepAliveSent wiring (ttl.sentAt): the
// manager then takes each etcd client answer's keepalive as sent when the
// answer came, schedules its renewals 4 s late, and their answers come
// after the end the health counts from the client's send.
//
// h1 reaches etcd through a proxy in its namespace that delays each byte,
// both ways, once the agent is ready; the endpoint checks are off (they
// give an endpoint 2 s).
func TestLeaseKeptReadyWithEtcdSlow(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, leaseSlowRunChild)
}

func leaseSlowRunChild(t *testing.T, etcd string) {
	const (
		eachWay = 2 * time.Second
		ttl     = 10 * time.Second
		hold    = 5 * ttl / 2
	)
	u, err := url.Parse(etcd)
	if err != nil {
		t.Fatal(err)
	}
	loopbackUp(t)
	l, err := net.Listen("tcp", "127.0.0.1:2479")
	if err != nil {
		t.Fatal(err)
	}
	var delay atomic.Int64
	late := func() time.Duration { return time.Duration(delay.Load()) }
	serveEach(t, l, func(c net.Conn) {
		up, err := net.Dial("tcp", u.Host)
		if err != nil {
			return
		}
		defer context.AfterFunc(t.Context(), func() { c.Close(); up.Close() })()
		go etcdtest.DelayCopy(up, c, late)
		etcdtest.DelayCopy(c, up, late)
	})

	cfg := hostConfig(t, "http://127.0.0.1:2479", "/coreos.com/network")
	cfg.SubnetLeaseTTL = ttl
	cfg.EtcdEndpointCheckInterval = 0
	logs := &logLines{}
	a := newFakeAgent(cfg, childLogger(t, logs))
	sent := &sentNotes{}
	a.health.notify = sent.notify
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	defer runReadyChildAgent(t, ctx, a)()

	from, lines := len(sent.get()), len(logs.get())
	delay.Store(int64(eachWay))
	slowed := time.Now()
	// The lapse of the lease's TTL is sent when it happens (health's
	// timer, TestLeaseLapseSentByRun); /readyz is read meanwhile too.
	var notReady []string
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for time.Since(slowed) < hold {
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
		if code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz"); err != nil || code != 200 {
			notReady = append(notReady, time.Since(slowed).Round(time.Millisecond).String()+": "+string(body))
		}
	}
	if len(notReady) > 0 {
		t.Errorf("etcd %v away each way, TTL %v: /readyz not 200 at %d of its reads over %v, first %q", eachWay, ttl, len(notReady), hold, notReady[0])
	}
	if err := sent.sentSince(from, "STATUS=not ready"); err == nil {
		t.Errorf("etcd %v away each way, TTL %v: sent %q, want no \"not ready\"", eachWay, ttl, sent.get()[from:])
	}
	for _, line := range logs.get()[lines:] {
		if strings.Contains(line, "last known expiry passed") {
			t.Errorf("etcd %v away each way, TTL %v: logged %s", eachWay, ttl, line)
		}
	}
}
