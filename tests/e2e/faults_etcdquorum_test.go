package e2e

// A three-member etcd cluster loses its quorum for longer than the agents'
// lease TTL:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── c1
//	               ├─ h2 198.18.0.2 ── c1
//	               ├─ h3 198.18.0.3 ── c1
//	               └─ etcd 198.18.0.254: members agentd-test (2379, the
//	                  harness's), m2 (12379) and m3 (22379); m2 and m3
//	                  killed, then started again

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestFaultEtcdQuorumLost: two of three etcd members are killed until every
// agent's 6 s lease TTL has passed unanswered (not ready), its endpoint
// checks have said that no endpoint serves, and it has logged OWN LEASE LOST
// saying that etcd has no leader (before 2026-12-07 its reason ended in
// "context deadline exceeded"), then started again. The member
// left answers without a leader; when the quorum is back, its new leader
// gives every lease a full TTL again, so no key was deleted: each agent
// is ready again, holds its own key (the same value), and every host's
// datapath is as before, without a ping lost.
func TestFaultEtcdQuorumLost(t *testing.T) {
	t.Parallel()
	c, endpoints, others, member := threeMembers(t, 3)
	f := &fixture{t: t, ctx: context.Background(), c: c, cli: quorumClient(t, c, endpoints)}
	f.put(prefix+"/config", netConfig("vxlan"))
	hosts := c.Hosts()
	for _, h := range hosts {
		f.start(h, "--subnet-lease-ttl=6s", "--etcd-endpoint-check-interval=2s", "--etcd-endpoints="+strings.Join(endpoints, ","))
	}
	f.waitReady(hosts...)
	var cs []*cluster.Container
	for _, h := range hosts {
		cs = append(cs, f.container(h))
	}
	f.pingAll(cs)
	before := f.leases()
	datapath := datapathStates(t, "vxlan", hosts)
	marks := logMarks(t, hosts)
	ps := f.pingRing(cs)

	others[1].Kill()
	others[2].Kill()
	lost := time.Now()
	const (
		none     = "no other endpoint serves either"
		noLeader = "etcd has no leader"
	)
	for _, h := range hosts {
		f.eventually(h.String()+" not ready, its TTL passed, saying that no endpoint serves and that etcd has no leader", 60*time.Second, func() error {
			code, body, err := h.HealthGet(f.ctx, "/readyz")
			if err != nil {
				return err
			}
			if code != 503 || !strings.Contains(string(body), "TTL has passed") && !strings.Contains(string(body), "went unconfirmed past its expiry") {
				return fmt.Errorf("/readyz %d %q, want 503 saying the TTL has passed", code, body)
			}
			if len(logLinesWith(marks.since(t, h), none)) == 0 {
				return fmt.Errorf("no line says %q yet", none)
			}
			lostLines := logLinesWith(marks.since(t, h), "OWN LEASE LOST")
			if len(lostLines) == 0 {
				return fmt.Errorf("no OWN LEASE LOST line yet")
			}
			if !strings.Contains(lostLines[0], noLeader) {
				t.Fatalf("%s: OWN LEASE LOST does not say %q: %s", h, noLeader, lostLines[0])
			}
			return nil
		})
	}
	// The cluster stops them at its end.
	member(1)
	member(2)
	back := time.Now()
	t.Logf("quorum lost for %v", back.Sub(lost).Round(time.Millisecond))
	for _, h := range hosts {
		if err := h.WaitReady(f.ctx, 30*time.Second); err != nil {
			t.Fatalf("%s not ready within 30 s of the quorum's return: %v", h, err)
		}
	}
	t.Logf("every agent ready again %v after the members were started again", time.Since(back).Round(time.Millisecond))
	f.cli.Close()
	f.cli = quorumClient(t, c, endpoints)
	f.eventually("every key as before", 10*time.Second, func() error {
		if after := f.leases(); fmt.Sprint(after) != fmt.Sprint(before) {
			return fmt.Errorf("leases %v, were %v", after, before)
		}
		return nil
	})
	sameDatapath(t, "vxlan", hosts, datapath)
	total := stopRing(t, ps)
	recordLoss("etcd quorum lost past the TTL vxlan", total, "3 containers in a ring; 2 of 3 members down")
	t.Logf("%d pings sent, %d lost", total.Sent, total.Lost())
}

// quorumClient is a client of the test's own to the members at endpoints,
// closed at the end of the test.
func quorumClient(t *testing.T, c *cluster.Cluster, endpoints []string) *clientv3.Client {
	t.Helper()
	cfg := c.EtcdClientConfig()
	cfg.Endpoints = endpoints
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}
