package e2e

// etcd far away: every byte between the agents and etcd arrives a second
// late, each way (the kernel here has no netem; a proxy in the etcd
// namespace delays what it forwards):
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── c1
//	               ├─ h2 198.18.0.2 ── c1
//	               ├─ h3 198.18.0.3 ── c1
//	               └─ etcd 198.18.0.254: etcd on 2379; delaying proxies to it
//	                                     on 2479 and 2480, the agents' endpoints

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/etcdtest"
)

// slowEtcdDelay is how late each byte arrives, each way: a round trip of
// 2 s, below the 5 s the etcd client and the endpoint check wait for an
// answer, and a fifth of slowEtcdTTL.
const (
	slowEtcdDelay = time.Second
	slowEtcdTTL   = "--subnet-lease-ttl=10s"
	// slowEtcdHold is how long etcd stays slow: the TTL twice, and ten
	// rounds of the endpoint checks (slowEtcdCheck).
	slowEtcdHold  = 20 * time.Second
	slowEtcdCheck = "--etcd-endpoint-check-interval=2s"
)

// TestFaultEtcdSlow: etcd answers, but a second late each way, for twice
// the agents' lease TTL (10 s). No agent flaps: each stays ready and keeps
// its lease (the same etcd lease, renewed in time), loses no ping, logs no
// error, reports both of its etcd endpoints up, and follows a lease written
// meanwhile. Before c7e1245 each agent logged both endpoints unreachable
// (`answers nothing within 2s`, serving "0 of 2") once etcd was slow.
func TestFaultEtcdSlow(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, netConfig("vxlan"))
	var delay atomic.Int64
	endpoints := []string{"198.18.0.254:2479", "198.18.0.254:2480"}
	for _, addr := range endpoints {
		delayingProxy(t, f.c.EtcdNamespace(), addr, "198.18.0.254:2379", &delay)
	}
	hosts := f.c.Hosts()
	for _, h := range hosts {
		f.start(h, slowEtcdTTL, slowEtcdCheck, "--etcd-endpoints=http://"+strings.Join(endpoints, ",http://"))
	}
	f.waitReady(hosts...)
	var cs []*cluster.Container
	for _, h := range hosts {
		cs = append(cs, f.container(h))
	}
	f.pingAll(cs)
	before := f.leaseRecords()
	marks := logMarks(t, hosts)
	ps := f.pingRing(cs)

	delay.Store(int64(slowEtcdDelay))
	slowed := time.Now()
	f.staysReady(hosts, "while etcd was slow", slowed, func() bool { return time.Since(slowed) >= slowEtcdHold/2 })
	f.followsLeaseChange("vxlan", hosts, marks, "etcd became slow")
	f.staysReady(hosts, "while etcd was slow", slowed, func() bool { return time.Since(slowed) >= slowEtcdHold })
	for _, h := range hosts {
		st := agentStatus(t, f, h)
		if len(st.EtcdEndpoints) != len(endpoints) {
			t.Errorf("%s: /status etcdEndpoints %+v, want %d", h, st.EtcdEndpoints, len(endpoints))
		}
		for _, e := range st.EtcdEndpoints {
			if !e.Up {
				t.Errorf("%s: endpoint %s reported down while etcd was slow: %s", h, e.Endpoint, e.Error)
			}
		}
		if !st.EtcdConnected {
			t.Errorf("%s: /status etcdConnected false while etcd was slow: %s", h, st.EtcdError)
		}
	}
	delay.Store(0)

	total := stopRing(t, ps)
	recordLoss("etcd slow (1 s each way) vxlan", total, "3 containers in a ring, for twice the lease TTL")
	t.Logf("%d pings sent, %d lost", total.Sent, total.Lost())
	if after := f.leaseRecords(); !equalRecords(before, after) {
		t.Errorf("leases changed while etcd was slow:\nbefore %v\nafter  %v", before, after)
	}
	for _, h := range hosts {
		if errs := errorLogLines(marks.since(t, h)); len(errs) > 0 {
			t.Errorf("%s logged errors while etcd was slow:\n%s", h, strings.Join(errs, "\n"))
		}
	}
}

// delayingProxy forwards TCP connections to addr in ns to target, each
// chunk read on either side written to the other delay (as it was when the
// chunk was read) later, in order: a link whose latency is delay each way.
// Its listener and connections are closed when the test ends.
func delayingProxy(t *testing.T, ns *cluster.Namespace, addr, target string, delay *atomic.Int64) {
	t.Helper()
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := ns.Dial(ctx, "tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			stop := context.AfterFunc(ctx, func() { c.Close(); u.Close() })
			wg.Add(2)
			late := func() time.Duration { return time.Duration(delay.Load()) }
			go func() { defer wg.Done(); etcdtest.DelayCopy(u, c, late); stop() }()
			go func() { defer wg.Done(); etcdtest.DelayCopy(c, u, late) }()
		}
	}()
}
