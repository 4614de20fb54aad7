package e2e

// etcd frozen (SIGSTOP) for longer than every agent's lease TTL:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── c1
//	               ├─ h2 198.18.0.2 ── c1
//	               ├─ h3 198.18.0.3 ── c1
//	               └─ etcd 198.18.0.254   paused, resumed

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
)

// frozenLease is the lease TTL of TestFaultEtcdFrozenPastTTL's agents, and
// frozenTTL the flag that sets it.
const (
	frozenLease = 4 * time.Second
	frozenTTL   = "--subnet-lease-ttl=4s"
)

// frozenLossBound is how many pings of a pair may go unanswered across the
// thaw: those sent between a peer's removal of the routes of a lease etcd
// revoked and its route to the lease its owner wrote again (about 20 ms
// when measured, 2 pings).
const frozenLossBound = 100

// TestFaultEtcdFrozenPastTTL: etcd is frozen (SIGSTOP) until every agent
// says that its lease's TTL has passed unanswered (not ready), and a TTL
// has passed since the freeze, then thawed. An agent counts its TTL from
// the send of the last keepalive etcd answered, etcd from the arrival of the
// last it received: one sent just before the freeze may have arrived
// unanswered, and keeps that lease alive on etcd until a TTL after the
// freeze. etcd's clock went on meanwhile, so on the thaw it revokes every
// lease it holds; each agent takes its own subnet back at once (the same key and
// value, a new etcd lease), is ready again within 10 s, and says so once;
// each host's datapath is as before. The routes to a peer are gone only
// between etcd's revocation and the peer's write: a pair loses at most
// frozenLossBound pings. vxlan and host-gw, each on its own cluster.
func TestFaultEtcdFrozenPastTTL(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testEtcdFrozenPastTTL(t, backend)
		})
	}
}

func testEtcdFrozenPastTTL(t *testing.T, backend string) {
	f := newFixture(t, 3, netConfig(backend))
	hosts := f.c.Hosts()
	for _, h := range hosts {
		f.start(h, frozenTTL)
	}
	f.waitReady(hosts...)
	var cs []*cluster.Container
	for _, h := range hosts {
		cs = append(cs, f.container(h))
	}
	f.pingAll(cs)
	before := f.leaseRecords()
	datapath := datapathStates(t, backend, hosts)
	marks := logMarks(t, hosts)
	ps := f.pingRing(cs)

	if err := f.c.PauseEtcd(); err != nil {
		t.Fatal(err)
	}
	paused := time.Now()
	for _, h := range hosts {
		f.eventually(h.String()+" says its lease's TTL passed unanswered", 30*time.Second, func() error {
			code, body, err := h.HealthGet(f.ctx, "/readyz")
			if err != nil {
				return err
			}
			// Later, once a renewal sent directly has failed too,
			// the agent gives the lease up: either says the TTL
			// is over.
			if code != 503 || !strings.Contains(string(body), "TTL has passed") && !strings.Contains(string(body), "went unconfirmed past its expiry") {
				return fmt.Errorf("/readyz %d %q, want 503 saying the TTL has passed", code, body)
			}
			return nil
		})
	}
	// A thaw 2.7 s after the freeze, once every agent had said so, found
	// one lease alive on etcd (renewed at the thaw) while the test wanted
	// every key on a new lease (CI, load average 20, 2026-12-07): wait for
	// the TTL from the freeze, by which etcd's own count has run out.
	if left := time.Until(paused.Add(frozenLease + 250*time.Millisecond)); left > 0 {
		time.Sleep(left)
	}
	if err := f.c.ResumeEtcd(); err != nil {
		t.Fatal(err)
	}
	thawed := time.Now()
	t.Logf("etcd thawed after %v frozen", thawed.Sub(paused).Round(time.Millisecond))
	for _, h := range hosts {
		if err := h.WaitReady(f.ctx, 10*time.Second); err != nil {
			t.Fatalf("%s not ready within 10 s of the thaw: %v", h, err)
		}
	}
	t.Logf("every agent ready again %v after the thaw", time.Since(thawed).Round(time.Millisecond))
	// The test's own client would find etcd back only after gRPC's
	// backoff: use a new one.
	f.reconnect()
	f.eventually("every key written again", 10*time.Second, func() error {
		after := f.leaseRecords()
		for k, b := range before {
			a, ok := after[k]
			switch {
			case !ok:
				return fmt.Errorf("key %s missing", k)
			case a.value != b.value:
				return fmt.Errorf("key %s: value %s, was %s", k, a.value, b.value)
			case a.leaseID == b.leaseID:
				return fmt.Errorf("key %s still on etcd lease %x, which etcd revoked", k, a.leaseID)
			}
		}
		if len(after) != len(before) {
			return fmt.Errorf("%d keys, was %d: %v", len(after), len(before), after)
		}
		return nil
	})
	for _, h := range hosts {
		f.eventually(h.String()+"'s datapath as before", 10*time.Second, func() error {
			s, err := datapathState(backend, h)
			if err != nil {
				return err
			}
			if s != datapath[h] {
				return fmt.Errorf("datapath\n%s\nwant\n%s", s, datapath[h])
			}
			return nil
		})
	}
	f.pingAll(cs)
	var total int
	for _, p := range ps {
		r := p.stopSettled(t)
		total += r.Lost()
		t.Logf("%s: %d of %d lost", p, r.Lost(), r.Sent)
		if r.Lost() > frozenLossBound {
			t.Errorf("%s lost %d of %d pings, want at most %d", p, r.Lost(), r.Sent, frozenLossBound)
		}
		recordLoss("etcd frozen past the TTL "+backend+": "+p.String(), r, "expected loss: etcd revokes every lease at the thaw")
	}
	for _, h := range hosts {
		log := marks.since(t, h)
		if n := len(logLinesWith(log, "OWN LEASE LOST")); n != 1 {
			t.Errorf("%s logged OWN LEASE LOST %d times, want once:\n%s", h, n, log)
		}
		if n := len(logLinesWith(log, "own lease recreated with the same subnet")); n != 1 {
			t.Errorf("%s logged its lease recreated %d times, want once:\n%s", h, n, log)
		}
	}
}
