package agent

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// TestLeaseTTLSentCountedByRun: the agent that run assembles counts its
// lease's end from when the etcd client's keepalive was sent (run gives
// the client leaseTTL.follow's Lease), so with etcd's answers late the time
// left on /metrics just after an answer is the TTL less the answer's delay.
// TestLeaseTTLCountedFrom-
// KeepAliveSent calls follow itself: without this test run could go back
// to tapping the client's own Lease, which counts from the answer, and
// every test would pass.
//
// etcd's answers to h1 come 1.5 s late; etcd receives the keepalives at
// once. Read right after an answer (the value on /metrics went up), the
// time left is the TTL less 1.5 s counted from the keepalive sent, and
// the whole TTL counted from the answer.
func TestLeaseTTLSentCountedByRun(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, leaseTTLSentRunChild)
}

func leaseTTLSentRunChild(t *testing.T, etcd string) {
	const answersLate = 1500 * time.Millisecond
	u, err := url.Parse(etcd)
	if err != nil {
		t.Fatal(err)
	}
	loopbackUp(t)
	l, err := net.Listen("tcp", "127.0.0.1:2479")
	if err != nil {
		t.Fatal(err)
	}
	serveEach(t, l, func(c net.Conn) { forwardAnswersLate(t.Context(), c, u.Host, answersLate) })

	cfg := hostConfig(t, "http://127.0.0.1:2479", "/coreos.com/network")
	cfg.SubnetLeaseTTL = 20 * time.Second
	cfg.EtcdEndpointCheckInterval = 0
	a := newFakeAgent(cfg, childLogger(t, &logLines{}))
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	defer runChildAgent(t, ctx, a)()

	left := func() (float64, error) {
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/metrics")
		if err != nil {
			return 0, err
		}
		m := leaseTTLMetric.FindSubmatch(body)
		if m == nil {
			return 0, fmt.Errorf("no keepalive of the lease answered yet")
		}
		return strconv.ParseFloat(string(m[1]), 64)
	}
	var before float64
	if err := cluster.Eventually(ctx, time.Minute, func() (err error) { before, err = left(); return err }); err != nil {
		t.Fatal(err)
	}
	// The next answer moves the lease's end on (the keepalives come every
	// third of the TTL); the time left alone could be read lower just
	// after it than just after the last one.
	beforeEnd := time.Now().Add(time.Duration(before * float64(time.Second)))
	var after float64
	err = cluster.Eventually(ctx, cfg.SubnetLeaseTTL, func() (err error) {
		after, err = left()
		if end := time.Now().Add(time.Duration(after * float64(time.Second))); err == nil && end.Sub(beforeEnd) < 300*time.Millisecond {
			err = fmt.Errorf("time left %.3f s, the lease's end not moved on since %.3f s were left", after, before)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// Read within about 100 ms of the answer (Eventually's longest pause): counted from the keepalive sent,
	// 1.5 s of the TTL had gone when it came; counted from the answer,
	// none.
	if most := cfg.SubnetLeaseTTL - answersLate + 500*time.Millisecond; after > most.Seconds() {
		t.Fatalf("/metrics says %.3f s left on the %v lease just after a keepalive's answer that came %v after etcd renewed it, want at most %.1f s: the end is counted from the answer, not from the keepalive sent",
			after, cfg.SubnetLeaseTTL, answersLate, most.Seconds())
	}
	t.Logf("time left just after an answer: %.3f s of %v (answers %v late)", after, cfg.SubnetLeaseTTL, answersLate)
}
