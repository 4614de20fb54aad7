package e2e

// Fault scenarios around etcd (issue #4, scenarios 1, 2, 3 and 6): etcd
// down, one host partitioned from it, watch history compacted while a host
// is cut off, and a dead host's lease running out; and etcd hung (frozen,
// its sockets open). Each runs on its own cluster:
//
//	ns sw: bridge ─┬─ h1 198.18.0.1 ── c1      h1 is the host cut off from etcd
//	               ├─ h2 198.18.0.2 ── c1      (scenarios 2 and 3)
//	               ├─ h3 198.18.0.3 ── c1      h3 dies (scenario 6), leaves (3)
//	               ├─ (h4 joins: scenarios 3 and 6)
//	               └─ etcd 198.18.0.254        stopped (1), compacted (3), paused (hung)

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdOutage is how long scenario 1 keeps etcd down (the figure).
const etcdOutage = 60 * time.Second

func netConfig(backend string) string {
	return fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend)
}

// TestFaultEtcdDown (scenario 1): etcd's process is stopped for 60 s. Traffic
// between existing containers loses nothing; every agent stays up and ready
// (its 24 h lease is not in doubt), logs the outage once rather than once per
// retry, reconnects by itself and follows lease changes again; no lease is
// lost. vxlan, host-gw and udp (whose forwarding table lives in the agent,
// not the kernel) run side by side, each on its own cluster.
func TestFaultEtcdDown(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"vxlan", "host-gw", "udp"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testEtcdDown(t, backend)
		})
	}
}

func testEtcdDown(t *testing.T, backend string) {
	etcdFault(t, backend, etcdFaultRun{
		name: "etcd down 60s", what: "the outage", noun: "the outage and the reconnect", cause: "",
		fault: func(f *fixture, hosts []*cluster.Host, _ logMarkSet) {
			if err := f.c.StopEtcd(); err != nil {
				t.Fatal(err)
			}
			down := time.Now()
			t.Logf("etcd stopped; staying down for %v", etcdOutage)
			// The outage is the scenario: wait it out, asking every agent
			// each second whether it is still running and ready.
			f.staysReady(hosts, "while etcd was down", down, func() bool { return time.Since(down) >= etcdOutage })
			if err := f.c.StartEtcd(f.ctx); err != nil {
				t.Fatal(err)
			}
		},
		back: "etcd came back",
	})
}

// etcdFaultRun is one etcd fault for etcdFault.
type etcdFaultRun struct {
	name  string // the scenario in the lost-ping table
	what  string // the fault, for messages ("the outage")
	noun  string // what the ring pings through, for the table's note
	cause string // what the agents' outage line must say
	// fault brings the fault on and ends it; marks are the agents' logs
	// from before it.
	fault func(f *fixture, hosts []*cluster.Host, marks logMarkSet)
	back  string // why the agents follow the lease change written after
}

// etcdFault runs r on a cluster of 3 hosts of backend, whose containers
// ping each other in a ring throughout: no ping is lost, every agent
// follows a lease written after the fault, becomes ready, keeps its lease
// and its datapath unchanged, and logs the outage once (with r.cause).
func etcdFault(t *testing.T, backend string, r etcdFaultRun) {
	f := newFixture(t, 3, netConfig(backend))
	hosts := f.c.Hosts()
	cs := f.startAll()
	before := f.leaseRecords()
	datapath := datapathStates(t, backend, hosts)
	marks := logMarks(t, hosts)

	ps := f.pingRing(cs)
	r.fault(f, hosts, marks)
	// The test's own client would find etcd back only after gRPC's
	// backoff (up to 2 minutes): use a new one.
	f.reconnect()
	f.followsLeaseChange(backend, hosts, marks, r.back)
	f.waitReady(hosts...)
	total := stopRing(t, ps)
	recordLoss(r.name+" "+backend, total, "3 containers in a ring, through "+r.noun)
	t.Logf("%s: %d pings sent, %d lost", backend, total.Sent, total.Lost())

	if after := f.leaseRecords(); !equalRecords(before, after) {
		t.Errorf("leases changed across %s:\nbefore %v\nafter  %v", r.what, before, after)
	}
	sameDatapath(t, backend, hosts, datapath)
	f.outageLoggedOnce(hosts, marks, r.cause)
}

// outageLoggedOnce checks that each agent logged, since marks, one outage
// of etcd: a single error line, the one saying etcd is unreachable (and
// containing cause), once when it started, and once that it ended, not
// once per reconnection attempt; and that no agent lost its lease.
func (f *fixture) outageLoggedOnce(hosts []*cluster.Host, marks logMarkSet, cause string) {
	t := f.t
	t.Helper()
	for _, h := range hosts {
		// The line saying etcd is back may trail the watch by a moment.
		f.eventually(h.String()+" logs the end of the outage", 10*time.Second, func() error {
			if len(logLinesWith(marks.since(t, h), "etcd reachable again")) == 0 {
				return fmt.Errorf("no line saying etcd is reachable again")
			}
			return nil
		})
		log := marks.since(t, h)
		errs := errorLogLines(log)
		if len(errs) != 1 || !strings.Contains(errs[0], "etcd unreachable") || !strings.Contains(errs[0], cause) {
			t.Errorf("%s logged %d error lines for one outage, want 1 saying etcd is unreachable (%q):\n%s", h, len(errs), cause, strings.Join(errs, "\n"))
		} else {
			t.Logf("%s: %s", h, errs[0])
		}
		back := logLinesWith(log, "etcd reachable again")
		if len(back) != 1 || !strings.Contains(back[0], "downFor=") {
			t.Errorf("%s logged the end of the outage %d times, want once with its length:\n%s", h, len(back), strings.Join(back, "\n"))
		} else {
			t.Logf("%s: %s", h, back[0])
		}
		if strings.Contains(log, "OWN LEASE LOST") {
			t.Errorf("%s lost its lease while etcd was out of reach, with a 24h TTL", h)
		}
	}
}

// hungNoticed bounds how long after etcd freezes each agent says so. A
// frozen etcd refuses nothing: the kernel still accepts connections to it,
// so the agent's connection breaks only when a keepalive ping goes
// unanswered (agent/etcd.go: a ping after 10 s without traffic, 5 s for the
// answer), and the outage is logged 3 s after that (outageGrace) and up to
// 2 s of waiting for etcd's answer to the probe (refusalWait): 20 s at most,
// and 7 s more for a busy machine.
const hungNoticed = 27 * time.Second

// TestFaultEtcdHung: etcd's process is frozen (SIGSTOP, its sockets open)
// under running agents until each has noticed, then thawed. To the agents
// this is slow requests and a stalled watch, not refused connections.
// Traffic between existing containers loses nothing; every agent stays up
// and ready, reports etcd unreachable within its keepalive window
// (/status etcdConnected false, and the outage logged once, saying that
// etcd accepts connections), and follows a lease written right after the
// thaw: its watch recovered. vxlan and udp run side by side, each on its
// own cluster.
func TestFaultEtcdHung(t *testing.T) {
	t.Parallel()
	for _, backend := range []string{"vxlan", "udp"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			testEtcdHung(t, backend)
		})
	}
}

func testEtcdHung(t *testing.T, backend string) {
	etcdFault(t, backend, etcdFaultRun{
		name: "etcd hung (SIGSTOP)", what: "the freeze", noun: "the freeze and the resume",
		// etcd accepts connections but answers nothing: the line says so
		// rather than blame the network (etcdConn.probe).
		cause: "an endpoint accepts connections",
		fault: func(f *fixture, hosts []*cluster.Host, marks logMarkSet) {
			if err := f.c.PauseEtcd(); err != nil {
				t.Fatal(err)
			}
			paused := time.Now()
			// Frozen until every agent has said so both ways, or
			// hungNoticed has passed; meanwhile each must stay ready.
			disconnected, reported := map[*cluster.Host]time.Duration{}, map[*cluster.Host]time.Duration{}
			f.staysReady(hosts, "while etcd was hung", paused, func() bool {
				for _, h := range hosts {
					if _, ok := disconnected[h]; !ok {
						ctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
						code, body, err := h.HealthGet(ctx, "/status")
						cancel()
						var st agent.Status
						if err == nil && code == 200 && json.Unmarshal(body, &st) == nil && !st.EtcdConnected {
							disconnected[h] = time.Since(paused)
						}
					}
					if _, ok := reported[h]; !ok && len(logLinesWith(marks.since(t, h), "etcd unreachable")) > 0 {
						reported[h] = time.Since(paused)
					}
				}
				return len(disconnected) == len(hosts) && len(reported) == len(hosts) || time.Since(paused) >= hungNoticed
			})
			if err := f.c.ResumeEtcd(); err != nil {
				t.Fatal(err)
			}
			t.Logf("etcd resumed after %v frozen", time.Since(paused).Round(time.Millisecond))
			for _, h := range hosts {
				d, ok1 := disconnected[h]
				r, ok2 := reported[h]
				if !ok1 || !ok2 {
					t.Errorf("%s did not report etcd unreachable within %v of a hung etcd: /status etcdConnected false: %v, outage logged: %v", h, hungNoticed, ok1, ok2)
					continue
				}
				t.Logf("%s: /status etcdConnected false %v and the outage logged %v after the freeze (seen at 1 s polls)", h, d.Round(time.Second), r.Round(time.Second))
			}
			// Right after the thaw the agents' connections are broken or
			// backing off, and their watches must resume by themselves.
		},
		back: "etcd was resumed",
	})
}

// staysReady asks every agent each second whether it is still running and
// ready, until done returns true (called before each round). An agent that
// exited fails the test at once; a 503 is an error, and so is a health
// server that does not answer twice in a row (once may be a busy machine),
// reported once per host with the time since start; during says when.
func (f *fixture) staysReady(hosts []*cluster.Host, during string, start time.Time, done func() bool) {
	t := f.t
	t.Helper()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	notReady := map[*cluster.Host]string{}
	unanswered := map[*cluster.Host]int{}
	for !done() {
		<-tick.C
		for _, h := range hosts {
			if a := h.Agent(); a.Exited() {
				t.Fatalf("%s: agent exited with code %d %s", h, a.ExitCode(), during)
			}
			ctx, cancel := context.WithTimeout(f.ctx, 2*time.Second)
			code, body, err := h.HealthGet(ctx, "/readyz")
			cancel()
			switch {
			case err != nil:
				unanswered[h]++
				if unanswered[h] < 2 {
					continue
				}
			case code != 200:
				err = fmt.Errorf("/readyz %d: %s", code, strings.TrimSpace(string(body)))
			default:
				unanswered[h] = 0
			}
			if err != nil && notReady[h] == "" {
				notReady[h] = fmt.Sprintf("%v after %v", err, time.Since(start).Round(time.Second))
			}
		}
	}
	for h, why := range notReady {
		t.Errorf("%s was not ready %s, though its lease was not in doubt: %s", h, during, why)
	}
}

// followsLeaseChange writes a lease for a peer that does not exist and waits
// until every host's datapath holds it, then deletes it and waits until
// none does: the agents' watches work (again, after what happened). Until
// the write, since marks, no agent may have changed its datapath: nothing
// in the lease set changed.
func (f *fixture) followsLeaseChange(backend string, hosts []*cluster.Host, marks logMarkSet, after string) {
	t := f.t
	t.Helper()
	for _, h := range hosts {
		for _, l := range strings.Split(marks.since(t, h), "\n") {
			if kernelChange.MatchString(l) || strings.Contains(l, `"forwarding table `) {
				t.Errorf("%s changed its datapath though no lease changed: %s", h, l)
			}
		}
	}
	fake := fakePeer(backend)
	// udp's forwarding table is the agent's own: the log line of each
	// change is what can be seen of it.
	entry := fmt.Sprintf(`entry="forward %s to %s:8285"`, fake.subnet, fake.publicIP)
	written := logMarks(t, hosts)
	f.put(prefix+"/subnets/"+fake.key, fake.value)
	start := time.Now()
	for _, h := range hosts {
		f.eventually(h.String()+" programs a lease written after "+after, 30*time.Second, func() error {
			if backend == "udp" {
				return logHas(written.since(t, h), `"forwarding table add"`, entry)
			}
			return hasRoute(h, fake.subnet)
		})
	}
	t.Logf("every agent programmed a lease written after %s %v after the write", after, time.Since(start).Round(time.Millisecond))
	deleted := logMarks(t, hosts)
	if _, err := f.cli.Delete(f.ctx, prefix+"/subnets/"+fake.key); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		f.eventually(h.String()+" forgets the deleted lease", 10*time.Second, func() error {
			if backend == "udp" {
				return logHas(deleted.since(t, h), `"forwarding table delete"`, entry)
			}
			return noTraceOf(h, fake.subnet, fake.publicIP)
		})
	}
}

// logHas returns nil if a line of log contains every one of subs.
func logHas(log string, subs ...string) error {
	for _, l := range strings.Split(log, "\n") {
		if containsAll(l, subs) {
			return nil
		}
	}
	return fmt.Errorf("no log line with %q", subs)
}

// datapathStates is datapathState of each of hosts.
func datapathStates(t *testing.T, backend string, hosts []*cluster.Host) map[*cluster.Host]string {
	t.Helper()
	m := map[*cluster.Host]string{}
	for _, h := range hosts {
		s, err := datapathState(backend, h)
		if err != nil {
			t.Fatal(err)
		}
		m[h] = s
	}
	return m
}

// sameDatapath checks that each host's datapath is as before.
func sameDatapath(t *testing.T, backend string, hosts []*cluster.Host, before map[*cluster.Host]string) {
	t.Helper()
	now := datapathStates(t, backend, hosts)
	for _, h := range hosts {
		if now[h] != before[h] {
			t.Errorf("%s's datapath changed:\nbefore:\n%s\nafter:\n%s", h, before[h], now[h])
		}
	}
}

// pingRing has each container ping the next one until stopRing, and
// returns once every ping has been answered (awaitAll).
func (f *fixture) pingRing(cs []*cluster.Container) []*bgPing {
	f.t.Helper()
	var ps []*bgPing
	for i, c := range cs {
		ps = append(ps, f.pingUntilStopped(c, cs[(i+1)%len(cs)].IP()))
	}
	awaitAll(f.t, ps...)
	return ps
}

// stopRing stops the pings of pingRing (stopSettled), fails the test for
// each that lost any, and returns their sum.
func stopRing(t *testing.T, ps []*bgPing) cluster.PingResult {
	t.Helper()
	var total cluster.PingResult
	for _, p := range ps {
		r := p.stopSettled(t)
		total.Sent += r.Sent
		total.Received += r.Received
		total.InFlight += r.InFlight
		if r.Lost() != 0 {
			t.Errorf("%s: lost %d of %d pings", p, r.Lost(), r.Sent)
		}
	}
	return total
}

// shortTTL is the lease TTL of the hosts whose leases are meant to expire:
// a few keepalive rounds (etcd sends one every TTL/3), so the scenarios stay
// short without an agent's lease expiring because the machine is busy.
const shortTTL = "--subnet-lease-ttl=4s"

// TestFaultPartitionLeaseExpiry (scenario 2): h1 is cut off from etcd for
// longer than its lease's TTL. The lease expires: h1 says so once and is not
// ready, its peers remove its routes; then h1's etcd connection breaks too.
// When the partition heals, h1 recreates the same subnet key, its peers
// restore its routes, and its containers keep their addresses. Traffic
// between the other hosts never stops.
func TestFaultPartitionLeaseExpiry(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, netConfig("vxlan"))
	h1, h2, h3 := f.c.Host(1), f.c.Host(2), f.c.Host(3)
	f.start(h1, shortTTL)
	f.start(h2)
	f.start(h3)
	f.waitReady(h1, h2, h3)
	c1, c2, c3 := f.container(h1), f.container(h2), f.container(h3)
	f.pingAll([]*cluster.Container{c1, c2, c3})
	sn1 := hostSubnet(t, h1)
	key1 := subnet.MakeSubnetKey(sn1, netip.Prefix{})
	env1, err := h1.SubnetEnv()
	if err != nil {
		t.Fatal(err)
	}
	before := f.leaseRecords()[key1]
	marks := logMarks(t, []*cluster.Host{h1})

	others := f.pingUntilStopped(c2, c3.IP())
	toH1 := f.pingUntilStopped(c3, c1.IP())
	if err := h1.PartitionFromEtcd(f.ctx); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	f.eventually("h1's lease expires in etcd", 30*time.Second, func() error {
		if _, ok := f.leases()[key1]; ok {
			return fmt.Errorf("key %s still there", key1)
		}
		return nil
	})
	t.Logf("h1's lease expired %v after the partition", time.Since(cut).Round(time.Millisecond))
	for _, h := range []*cluster.Host{h2, h3} {
		f.eventually(h.String()+" removes h1's routes, neighbour and FDB entry", 10*time.Second, func() error {
			return noTraceOf(h, sn1, h1.IP)
		})
	}
	f.eventually("h1 is not ready while its lease is in doubt", 10*time.Second, func() error {
		code, body, err := h1.HealthGet(f.ctx, "/readyz")
		if err != nil {
			return err
		}
		if code != 503 || !strings.Contains(string(body), "lease") {
			return fmt.Errorf("/readyz %d %q, want 503 naming the lease", code, body)
		}
		return nil
	})
	// Partitions last; hold this one until h1's client has given up on
	// its connection too, so that recreating the lease has to wait for a
	// new one.
	f.eventually("h1 notices that etcd is unreachable", 60*time.Second, func() error {
		if len(logLinesWith(marks.since(t, h1), "etcd unreachable")) == 0 {
			return fmt.Errorf("h1 has not logged the outage yet")
		}
		return nil
	})

	if err := h1.HealPartition(f.ctx); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	t.Logf("partition healed after %v", healed.Sub(cut).Round(time.Millisecond))
	f.waitReady(h1)
	for _, h := range []*cluster.Host{h2, h3} {
		f.eventually(h.String()+" restores its route to h1", 30*time.Second, func() error {
			return hasRoute(h, sn1)
		})
	}
	t.Logf("h1 ready and routed to again %v after the heal", time.Since(healed).Round(time.Millisecond))
	f.pingAll([]*cluster.Container{c1, c2, c3})
	rOthers, rToH1 := others.stopSettled(t), toH1.stopSettled(t)
	recordLoss("h1 cut from etcd past its TTL: h2 to h3", rOthers, "hosts not partitioned: no loss allowed")
	recordLoss("h1 cut from etcd past its TTL: h3 to h1", rToH1, "expected loss: h1's routes are gone while its lease is")
	t.Logf("h2 -> h3: %d/%d lost; h3 -> h1: %d/%d lost (h1 unrouted while its lease was gone)", rOthers.Lost(), rOthers.Sent, rToH1.Lost(), rToH1.Sent)
	if rOthers.Lost() != 0 {
		t.Errorf("traffic between hosts that were not partitioned lost %d of %d pings", rOthers.Lost(), rOthers.Sent)
	}

	after, ok := f.leaseRecords()[key1]
	switch {
	case !ok:
		t.Fatalf("h1's key %s is not back: %v", key1, f.leases())
	case after.createRev == before.createRev || after.leaseID == before.leaseID:
		t.Errorf("h1's key %s was not recreated with a new etcd lease: before %+v, after %+v", key1, before, after)
	case after.value != before.value:
		t.Errorf("h1's lease value changed: before %s, after %s", before.value, after.value)
	}
	if got := hostSubnet(t, h1); got != sn1 {
		t.Errorf("h1 moved from %s to %s", sn1, got)
	}
	if env, err := h1.SubnetEnv(); err != nil || env["FLANNEL_SUBNET"] != env1["FLANNEL_SUBNET"] {
		t.Errorf("h1's subnet.env changed: %v (%v), was %v", env, err, env1)
	}
	// Two things went wrong, each said once: the lease was lost, and etcd
	// was unreachable; each is said once to be over.
	f.eventually("h1 logs the end of the outage", 10*time.Second, func() error {
		if len(logLinesWith(marks.since(t, h1), "etcd reachable again")) == 0 {
			return fmt.Errorf("no line saying etcd is reachable again")
		}
		return nil
	})
	log := marks.since(t, h1)
	errs := errorLogLines(log)
	if len(errs) != 2 || len(logLinesWith(log, "OWN LEASE LOST")) != 1 || len(logLinesWith(log, "etcd unreachable")) != 1 {
		t.Errorf("h1's error lines, want one saying OWN LEASE LOST and one saying etcd is unreachable:\n%s", strings.Join(errs, "\n"))
	}
	for _, over := range []string{"own lease recreated with the same subnet", "etcd reachable again"} {
		if n := len(logLinesWith(log, over)); n != 1 {
			t.Errorf("h1 logged %q %d times, want once", over, n)
		}
	}
}

// TestFaultCompactionWhileDisconnected (scenario 3): h1 is cut off from
// etcd until its connection breaks; meanwhile h4 joins, h3 leaves and etcd's
// history is compacted, so h1's watch cannot resume where it stopped. After
// the partition heals, h1 lists the leases again, and every running host's
// kernel holds exactly what the lease set implies. A compaction cannot tell
// h3's deleted key from one a restored snapshot lacks, so h1 keeps h3's
// routes for the grace of such keys (30 s, subnet.DefaultNewHistoryGrace)
// and then removes them, saying so.
func TestFaultCompactionWhileDisconnected(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, netConfig("vxlan"))
	h1, h2, h3 := f.c.Host(1), f.c.Host(2), f.c.Host(3)
	for _, h := range []*cluster.Host{h1, h2, h3} {
		f.start(h)
	}
	f.waitReady(h1, h2, h3)
	c1, c2 := f.container(h1), f.container(h2)
	f.pingAll([]*cluster.Container{c1, c2})
	marks := logMarks(t, []*cluster.Host{h1})

	p := f.pingUntilStopped(c1, c2.IP())
	if err := h1.PartitionFromEtcd(f.ctx); err != nil {
		t.Fatal(err)
	}
	cut := time.Now()
	// A short partition would only delay the watch's packets; wait until
	// h1's client gave up on the connection, so that it has to watch anew.
	f.eventually("h1 notices that etcd is unreachable", 60*time.Second, func() error {
		if len(logLinesWith(marks.since(t, h1), "etcd unreachable")) == 0 {
			return fmt.Errorf("h1 has not logged the outage yet")
		}
		return nil
	})
	t.Logf("h1 lost its etcd connection %v after the partition", time.Since(cut).Round(time.Millisecond))

	h4, err := f.c.AddHost(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.start(h4)
	f.waitReady(h4)
	if code, err := h3.Agent().Stop(); err != nil || code != 0 {
		t.Fatalf("stop h3's agent: exit %d, %v", code, err)
	}
	if code, err := f.start(h3, "--release-lease").Wait(f.ctx); err != nil || code != 0 {
		t.Fatalf("h3 --release-lease: exit %d, %v", code, err)
	}
	rev, err := f.c.CompactEtcd(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("h4 joined, h3 left, history compacted at revision %d", rev)
	if ok, err := h1.Ready(f.ctx); err != nil || !ok {
		t.Errorf("h1 not ready while cut off from etcd, though its 24h lease is not in doubt: %v, %v", ok, err)
	}

	if err := h1.HealPartition(f.ctx); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	live := []*cluster.Host{h1, h2, h4}
	for _, h := range live {
		f.eventually(h.String()+"'s kernel equals the lease set", subnet.DefaultNewHistoryGrace+30*time.Second, func() error {
			return vxlanMatchesLeases(h, f.leases())
		})
	}
	t.Logf("every host's kernel equals the lease set %v after the heal", time.Since(healed).Round(time.Millisecond))
	// The lease manager drops h3 from its table, then says so: a pass of
	// h1's agent (its resync) may take h3's routes away in between.
	const removed = "removing the peers missing from the list after the compaction that nobody wrote again"
	f.eventually("h1 says it removed h3", 30*time.Second, func() error {
		if len(logLinesWith(marks.since(t, h1), removed)) == 0 {
			return fmt.Errorf("no line says so yet")
		}
		return nil
	})
	log := marks.since(t, h1)
	if len(logLinesWith(log, "compacted")) == 0 {
		t.Errorf("h1 never saw its watch revision compacted; the scenario did not happen:\n%s", log)
	}
	if len(logLinesWith(log, removed)) != 1 {
		t.Errorf("h1 did not say once that it removed h3, kept after the compaction:\n%s", log)
	}
	f.pingAll([]*cluster.Container{c1, c2, f.container(h4)})
	r := p.stopSettled(t)
	recordLoss("compaction while h1 cut off: h1 to h2", r, "etcd partitioned from h1, leases changed, compacted")
	if r.Lost() != 0 {
		t.Errorf("h1 -> h2 lost %d of %d pings", r.Lost(), r.Sent)
	}
}

// TestFaultDeadHostExpires (scenario 6): h3's agent is SIGKILLed and never
// comes back. When its short lease runs out every peer removes its route,
// neighbour and FDB entry, and its subnet, the only one left in a pool of
// three, goes to a new host h4.
func TestFaultDeadHostExpires(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 3, fmt.Sprintf(`{"Network":%q,"SubnetMin":"10.244.1.0","SubnetMax":"10.244.3.0","Backend":{"Type":"vxlan"}}`, network))
	h1, h2, h3 := f.c.Host(1), f.c.Host(2), f.c.Host(3)
	f.start(h1)
	f.start(h2)
	f.start(h3, shortTTL)
	f.waitReady(h1, h2, h3)
	c1, c2, c3 := f.container(h1), f.container(h2), f.container(h3)
	f.pingAll([]*cluster.Container{c1, c2, c3})
	sn3 := hostSubnet(t, h3)
	key3 := subnet.MakeSubnetKey(sn3, netip.Prefix{})

	p := f.pingUntilStopped(c1, c2.IP())
	h3.Agent().Kill()
	killed := time.Now()
	f.eventually("h3's lease expires", 30*time.Second, func() error {
		if _, ok := f.leases()[key3]; ok {
			return fmt.Errorf("key %s still there", key3)
		}
		return nil
	})
	t.Logf("h3's lease gone %v after its agent was killed", time.Since(killed).Round(time.Millisecond))
	for _, h := range []*cluster.Host{h1, h2} {
		f.eventually(h.String()+" forgets h3", 10*time.Second, func() error {
			return noTraceOf(h, sn3, h3.IP)
		})
	}
	t.Logf("h1 and h2 hold nothing of h3 %v after the kill", time.Since(killed).Round(time.Millisecond))

	h4, err := f.c.AddHost(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	f.start(h4)
	f.waitReady(h4)
	if got := hostSubnet(t, h4); got != sn3 {
		t.Fatalf("h4 got %s, want %s, the dead h3's subnet and the only free one", got, sn3)
	}
	c4 := f.container(h4)
	f.pingAll([]*cluster.Container{c1, c2, c4})
	for _, h := range []*cluster.Host{h1, h2, h4} {
		f.eventually(h.String()+"'s kernel equals the lease set", 10*time.Second, func() error {
			return vxlanMatchesLeases(h, f.leases())
		})
	}
	r := p.stopSettled(t)
	recordLoss("dead host's lease expires: h1 to h2", r, "h3 SIGKILLed, its lease expired, h4 took its subnet")
	if r.Lost() != 0 {
		t.Errorf("h1 -> h2 lost %d of %d pings", r.Lost(), r.Sent)
	}
}

// vxlanMatchesLeases checks that h's agentd routes (proto 74) and the
// neighbours and FDB entries of flannel.1 are exactly those the leases
// (raw values by subnet key, h's own included) imply.
func vxlanMatchesLeases(h *cluster.Host, leases map[string]string) error {
	var want struct{ routes, neigh, fdb []string }
	found := false
	for k, v := range leases {
		sn, _, err := subnet.ParseSubnetKey(k)
		if err != nil {
			return err
		}
		var l struct {
			PublicIP    string
			BackendData struct{ VtepMAC string }
		}
		if err := json.Unmarshal([]byte(v), &l); err != nil {
			return fmt.Errorf("lease %s: %w", k, err)
		}
		if l.PublicIP == h.IP.String() {
			found = true
			continue
		}
		vtep := sn.Addr().String()
		want.routes = append(want.routes, fmt.Sprintf("%s via %s dev flannel.1 proto 74 onlink", sn, vtep))
		want.neigh = append(want.neigh, fmt.Sprintf("%s lladdr %s PERMANENT", vtep, l.BackendData.VtepMAC))
		want.fdb = append(want.fdb, fmt.Sprintf("%s dst %s self permanent", l.BackendData.VtepMAC, l.PublicIP))
	}
	if !found {
		return fmt.Errorf("no lease names %s", h.IP)
	}
	routes, err := h.Routes()
	if err != nil {
		return err
	}
	neigh, err := h.Neighbours("flannel.1")
	if err != nil {
		return err
	}
	fdb, err := h.FDB("flannel.1")
	if err != nil {
		return err
	}
	routes = slices.DeleteFunc(routes, func(r string) bool { return !strings.Contains(r, " proto 74") })
	for _, c := range []struct {
		what       string
		have, want []string
	}{{"routes", routes, want.routes}, {"neighbours", neigh, want.neigh}, {"fdb", fdb, want.fdb}} {
		slices.Sort(c.want)
		if !slices.Equal(c.have, c.want) {
			return fmt.Errorf("%s has %s\n%s\nwant\n%s", h, c.what, strings.Join(c.have, "\n"), strings.Join(c.want, "\n"))
		}
	}
	return nil
}

// fakeLease is a peer lease written by the test, for a host that does not
// exist: agents route to it like to any other.
type fakeLease struct {
	key, value string
	subnet     netip.Prefix
	publicIP   netip.Addr
}

func fakePeer(backend string) fakeLease {
	l := fakeLease{key: "10.244.250.0-24", subnet: netip.MustParsePrefix("10.244.250.0/24"), publicIP: netip.MustParseAddr("198.18.0.250")}
	switch backend {
	case "vxlan":
		l.value = `{"PublicIP":"198.18.0.250","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:fa"}}`
	default:
		l.value = fmt.Sprintf(`{"PublicIP":"198.18.0.250","PublicIPv6":null,"BackendType":%q}`, backend)
	}
	return l
}

// hasRoute checks that h has a route to sn.
func hasRoute(h *cluster.Host, sn netip.Prefix) error {
	routes, err := h.Routes()
	if err != nil {
		return err
	}
	for _, r := range routes {
		if strings.HasPrefix(r, sn.String()+" ") {
			return nil
		}
	}
	return fmt.Errorf("no route to %s in %v", sn, routes)
}

// leaseRecord is what identifies one holding of a subnet key: the etcd
// lease it is attached to and the revision that created it. A lease that
// was lost and recreated differs in both.
type leaseRecord struct {
	value     string
	leaseID   int64
	createRev int64
}

func (f *fixture) leaseRecords() map[string]leaseRecord {
	f.t.Helper()
	resp, err := f.cli.Get(f.ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		f.t.Fatal(err)
	}
	m := map[string]leaseRecord{}
	for _, kv := range resp.Kvs {
		m[strings.TrimPrefix(string(kv.Key), prefix+"/subnets/")] = leaseRecord{string(kv.Value), kv.Lease, kv.CreateRevision}
	}
	return m
}

func equalRecords(a, b map[string]leaseRecord) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// logMarks remembers how long each host's agent log was, so that a test can
// read what an agent logged from then on.
type logMarkSet map[*cluster.Host]int

func logMarks(t *testing.T, hosts []*cluster.Host) logMarkSet {
	t.Helper()
	m := logMarkSet{}
	for _, h := range hosts {
		log, err := h.AgentLog()
		if err != nil {
			t.Fatal(err)
		}
		m[h] = len(log)
	}
	return m
}

func (m logMarkSet) since(t *testing.T, h *cluster.Host) string {
	t.Helper()
	log, err := h.AgentLog()
	if err != nil {
		t.Fatal(err)
	}
	return log[min(m[h], len(log)):]
}

// reconnect replaces the fixture's etcd client with a new one.
func (f *fixture) reconnect() {
	f.t.Helper()
	cli, err := f.c.EtcdClient()
	if err != nil {
		f.t.Fatal(err)
	}
	f.cli.Close()
	f.cli = cli
}

// bgPing is a ping from a container that runs until stopped, for scenarios
// whose length is set by conditions rather than by a clock.
type bgPing struct {
	c   *cluster.Container
	dst netip.Addr
	p   *cluster.Process
}

// pingUntilStopped starts pinging dst from c every pingInterval.
func (f *fixture) pingUntilStopped(c *cluster.Container, dst netip.Addr) *bgPing {
	f.t.Helper()
	// Without -q: a line per answer tells whether the last probe was still
	// in flight when stop interrupted ping (see cluster.ParsePingRun), and
	// how many have come back so far (see await). A log per destination:
	// two pings from one container at once would mix their lines in one.
	p, err := c.StartNamed("ping-"+dst.String(), "ping", "-n", "-i", fmt.Sprintf("%.3f", pingInterval.Seconds()), "-W", "1", dst.String())
	if err != nil {
		f.t.Fatal(err)
	}
	return &bgPing{c: c, dst: dst, p: p}
}

func (b *bgPing) String() string { return fmt.Sprintf("%s -> %s", b.c, b.dst) }

// pingMargin is how many answers a bgPing must get before and again after
// the event it covers (see await): a fifth of a second or more.
const pingMargin = 20

// run is this run's part of the ping's log. The log holds earlier runs to
// this destination too: the run starts at its last header.
func (b *bgPing) run() ([]byte, error) {
	out, err := os.ReadFile(b.p.LogPath)
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndex(out, []byte("PING "+b.dst.String()+" "))
	if i < 0 {
		return nil, nil
	}
	return out[i:], nil
}

// answers is how many answers this run of ping has printed so far.
func (b *bgPing) answers() (int, error) {
	run, err := b.run()
	return bytes.Count(run, []byte("from "+b.dst.String()+": icmp_seq=")), err
}

// await waits until this run of ping has printed more answers than it had
// at the call, and least in all; it fails the test if ping has exited or
// the answers do not come within 10 s plus least's worth of intervals.
// Called before an event and again once the event is over, it shows that
// the run, and so the counts stop returns, covers the whole event and goes
// on past it: a ping bounded by a count or a deadline can end before a slow
// event does.
func (b *bgPing) await(t *testing.T, more, least int) {
	t.Helper()
	from, err := b.answers()
	if err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(context.Background(), 10*time.Second+time.Duration(least)*pingInterval, func() error {
		if b.p.Exited() {
			return fmt.Errorf("ping exited with %d", b.p.ExitCode())
		}
		got, err := b.answers()
		if err != nil {
			return err
		}
		if got < from+more || got < least {
			return fmt.Errorf("%d answers, %d since the call; want %d since the call and %d in all", got, got-from, more, least)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
}

// awaitAll waits for pingMargin answers from each of ps: called before an
// event, it shows that their runs began before it.
func awaitAll(t *testing.T, ps ...*bgPing) {
	t.Helper()
	for _, p := range ps {
		p.await(t, pingMargin, 0)
	}
}

// stopAfterMore waits for pingMargin more answers from each of ps, and for
// least's worth of answers in all, then stops them (stopSettled) and
// returns their counts in the same order. Called once the event the pings
// cover is over, it shows that their runs went on past it; least keeps a
// quick event's runs as long as a ping bounded by least would have been.
func stopAfterMore(t *testing.T, least time.Duration, ps ...*bgPing) []cluster.PingResult {
	t.Helper()
	for _, p := range ps {
		p.await(t, pingMargin, int(least/pingInterval))
	}
	var rs []cluster.PingResult
	for _, p := range ps {
		rs = append(rs, p.stopSettled(t))
	}
	return rs
}

// pingStatus is the line iputils ping prints on SIGQUIT: received/sent.
var pingStatus = regexp.MustCompile(`(\d+)/(\d+) packets, \d+% loss`)

// stopSettled is stop without the probes still in flight: stop ends ping
// at once and can tell only its last probe in flight, so a round trip
// longer than the interval (a busy machine, udp's datapath in an agent
// built with -race) would count the one before as lost. SIGQUIT makes ping
// print how many probes it has sent and go on; once each of those has its
// answer, or has had ping's 1 s (-W) for it, stop ends the run, and the
// counts are those probes' alone.
func (b *bgPing) stopSettled(t *testing.T) cluster.PingResult {
	t.Helper()
	mark, err := b.run()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.p.Signal(syscall.SIGQUIT); err != nil {
		t.Fatalf("%s: ping ended early: %v", b, err)
	}
	sent := 0
	err = cluster.Eventually(context.Background(), 10*time.Second, func() error {
		run, err := b.run()
		if err != nil {
			return err
		}
		m := pingStatus.FindSubmatch(run[min(len(mark), len(run)):])
		if m == nil {
			return fmt.Errorf("no status line since SIGQUIT")
		}
		sent, _ = strconv.Atoi(string(m[2]))
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	// Sequence numbers start at 1 and wrap at 65536, which a run of
	// fewer than 11 minutes does not reach. A duplicate answer counts once.
	answered := func() int {
		run, _ := b.run()
		seqs := map[int]bool{}
		for _, m := range b.seqRE().FindAllSubmatch(run, -1) {
			if seq, _ := strconv.Atoi(string(m[1])); seq <= sent {
				seqs[seq] = true
			}
		}
		return len(seqs)
	}
	// Some may never be answered: lost, not an error.
	_ = cluster.Eventually(context.Background(), time.Second+10*pingInterval, func() error {
		if n := answered(); n < sent {
			return fmt.Errorf("%d of %d answered", n, sent)
		}
		return nil
	})
	b.stop(t)
	return cluster.PingResult{Sent: sent, Received: answered()}
}

// seqRE matches this ping's answer lines; its group is the sequence number.
func (b *bgPing) seqRE() *regexp.Regexp {
	return regexp.MustCompile(`from ` + regexp.QuoteMeta(b.dst.String()) + `: icmp_seq=(\d+) `)
}

// stop interrupts the ping (SIGINT: it prints its summary and exits) and
// returns the counts.
func (b *bgPing) stop(t *testing.T) cluster.PingResult {
	t.Helper()
	if err := b.p.Signal(syscall.SIGINT); err != nil {
		t.Fatalf("%s: ping ended early: %v", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := b.p.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(b.p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	// The log holds every run from the container to this destination:
	// take the last.
	r, ok := cluster.ParsePingRun(out, b.dst.String())
	if !ok {
		t.Fatalf("%s: no summary in %s", b, b.p.LogPath)
	}
	return r
}

// errorLogLines are the klog error lines of an agent log.
func errorLogLines(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "E") {
			out = append(out, l)
		}
	}
	return out
}

func logLinesWith(log, sub string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return out
}
