//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	soakDuration = flag.Duration("soak.duration", 30*time.Minute, "how long the soak runs (make soak SOAK=5m)")
	soakBackend  = flag.String("soak.backend", "vxlan", "the backend: vxlan or udp, and host-gw with -soak.faults (make soak SOAK_BACKEND=udp)")
	soakFaults   = flag.Bool("soak.faults", false, "inject faults one at a time instead of churning hosts (make soak SOAK_FAULTS=1)")
	soakOnly     = flag.String("soak.only", "", "with -soak.faults, only the fault kinds whose name this regular expression matches, to run a surprising one again")
)

const (
	prefix   = "/coreos.com/network"
	network  = "10.244.0.0/16"
	stable   = 3
	churn    = 5
	churnTTL = "15s"
)

func TestSoak(t *testing.T) {
	d, backend := *soakDuration, *soakBackend
	if *soakFaults {
		if backend != "vxlan" && backend != "udp" && backend != "host-gw" {
			t.Fatalf("-soak.backend=%q: the fault soak runs vxlan, host-gw or udp", backend)
		}
		testFaults(t, d, backend)
		return
	}
	// Both backends give each host an address at <subnet>.0 that the
	// join check pings; host-gw has none.
	if backend != "vxlan" && backend != "udp" {
		t.Fatalf("-soak.backend=%q: the soak runs vxlan or udp", backend)
	}
	period := min(time.Minute, max(d/6, 10*time.Second))
	bg := context.Background()
	c, cli, cs := startSoak(t, stable+churn, stable, backend)
	hosts := c.Hosts()
	for i, from := range cs {
		to := cs[(i+1)%len(cs)]
		if err := cluster.Eventually(bg, 10*time.Second, func() error { return pingOnce(bg, from, to.IP()) }); err != nil {
			t.Fatalf("%s -> %s: %v", from, to, err)
		}
	}

	ctx, cancel := context.WithTimeout(bg, d)
	defer cancel()
	s := &soak{t: t, c: c, cli: cli, backend: backend, churnHosts: hosts[stable:], c1: cs[0], start: time.Now()}
	var wg sync.WaitGroup
	for i, from := range cs {
		to := cs[(i+1)%len(cs)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.pingLoop(ctx, from, to.IP(), max(time.Second, min(10*time.Second, period/3)))
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.churnLoop(ctx)
	}()
	t.Logf("soak (%s): %v, a sample every %v; %d stable hosts pinging in a ring, %d hosts joining and leaving", backend, d, period, stable, churn)

	tick := time.NewTicker(period)
	defer tick.Stop()
	rev0 := s.revision(bg)
	last := time.Now()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-tick.C:
		}
		if done {
			wg.Wait() // the last ping chunks finish and are counted
		}
		rev := s.revision(bg)
		el := time.Since(last)
		s.sample(bg, hosts[:stable], float64(rev-rev0)/el.Minutes(), done)
		rev0, last = rev, time.Now()
	}
	if backend == "udp" {
		for _, h := range hosts[:stable] {
			t.Logf("%s's datapath counters: %s", h, udpCounters(bg, h))
		}
	}
	s.report()
}

// soak is the state of one run, shared by the ping, churn and sample loops.
type soak struct {
	t          *testing.T
	c          *cluster.Cluster
	cli        *clientv3.Client
	backend    string
	churnHosts []*cluster.Host
	c1         *cluster.Container
	start      time.Time

	// churnMu is held by the churn loop while it changes a host, and by the
	// sampler while it compares routes with leases.
	churnMu sync.Mutex

	mu          sync.Mutex
	sent, lost  int // stable pings in the current period
	joins       int // in the current period
	released    int
	crashed     int
	joinReached []time.Duration // start → reached from c1, every join
	totalSent   int
	totalLost   int
	inFlight    int // last probes of chunks, in flight at the deadline (not counted)
	rows        []row
	failures    []string
}

type row struct {
	at                    string
	sent, lost            int
	joins, rel, crash     int
	revPerMin             float64
	rssMB, threads, gorts []string
	agentsUp              int
}

func (s *soak) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := fmt.Sprintf("%v: ", time.Since(s.start).Round(time.Second)) + fmt.Sprintf(format, args...)
	s.failures = append(s.failures, msg)
	s.t.Log("FAILURE " + msg)
}

// pingLoop pings dst from c every 10 ms, in chunks of the given length (a
// few per sample period), until ctx ends, adding each chunk's counts to the
// period's. A chunk's last probe, still in flight when its deadline ends
// it, is not counted (cluster.ParsePingRun).
func (s *soak) pingLoop(ctx context.Context, c *cluster.Container, dst netip.Addr, chunk time.Duration) {
	for ctx.Err() == nil {
		// The chunk is not tied to ctx: it always runs to its end, so its
		// summary is counted; the run overshoots by at most one chunk.
		r, err := c.PingFor(context.Background(), dst, chunk, 10*time.Millisecond)
		if err != nil {
			s.fail("ping %s -> %s: %v", c, dst, err)
			continue
		}
		s.mu.Lock()
		s.sent += r.Sent - r.InFlight
		s.lost += r.Lost()
		s.inFlight += r.InFlight
		s.mu.Unlock()
		if r.Lost() != 0 {
			s.fail("%s -> %s: lost %d of %d pings", c, dst, r.Lost(), r.Sent-r.InFlight)
		}
	}
}

func pingOnce(ctx context.Context, c *cluster.Container, dst netip.Addr) error {
	r, err := c.Ping(ctx, dst, 1, 0)
	if err != nil {
		return err
	}
	if r.Received != 1 {
		return fmt.Errorf("no reply from %s", dst)
	}
	return nil
}

// churnLoop makes a random churn host join or leave every 1–5 s.
func (s *soak) churnLoop(ctx context.Context) {
	for {
		// Pacing, not a check: the churn rate.
		t := time.NewTimer(time.Second + rand.N(4*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		h := s.churnHosts[rand.N(len(s.churnHosts))]
		s.churnMu.Lock()
		if a := h.Agent(); a != nil && !a.Exited() {
			s.leave(ctx, h, rand.N(2) == 0)
		} else {
			s.join(ctx, h)
		}
		s.churnMu.Unlock()
	}
}

func (s *soak) join(ctx context.Context, h *cluster.Host) {
	start := time.Now()
	if _, err := h.StartAgent(ctx, "--subnet-lease-ttl="+churnTTL); err != nil {
		s.fail("%s: start agent: %v", h, err)
		return
	}
	if err := h.WaitReady(ctx, 30*time.Second); err != nil {
		if ctx.Err() == nil {
			s.fail("%s joined but is not ready: %v", h, err)
		}
		return
	}
	env, err := subnetenv.Read(h.SubnetFile())
	if err != nil {
		s.fail("%s: %v", h, err)
		return
	}
	vtep := env.Subnet.Masked().Addr()
	err = cluster.Eventually(ctx, 10*time.Second, func() error { return pingOnce(ctx, s.c1, vtep) })
	if err != nil {
		if ctx.Err() == nil {
			s.fail("%s ready but its VTEP %s not reached from %s: %v", h, vtep, s.c1, err)
		}
		return
	}
	s.mu.Lock()
	s.joins++
	s.joinReached = append(s.joinReached, time.Since(start))
	s.mu.Unlock()
}

// leave stops h's agent: released (SIGTERM, then --release-lease: peers
// forget it at once) or crashed (SIGKILL: its lease expires after the TTL).
func (s *soak) leave(ctx context.Context, h *cluster.Host, release bool) {
	a := h.Agent()
	if !release {
		a.Kill()
		s.mu.Lock()
		s.crashed++
		s.mu.Unlock()
		return
	}
	if code, err := a.Stop(); err != nil || code != 0 {
		s.fail("%s: SIGTERM: exit %d, %v", h, code, err)
	}
	rel, err := h.StartAgent(ctx, "--release-lease")
	if err != nil {
		s.fail("%s: release: %v", h, err)
		return
	}
	if code, err := rel.Wait(ctx); err != nil || code != 0 {
		if ctx.Err() == nil {
			s.fail("%s: --release-lease: exit %d, %v", h, code, err)
		}
		return
	}
	s.mu.Lock()
	s.released++
	s.mu.Unlock()
}

func (s *soak) revision(ctx context.Context) int64 {
	resp, err := s.cli.Get(ctx, prefix+"/config")
	if err != nil {
		s.fail("etcd: %v", err)
		return 0
	}
	return resp.Header.Revision
}

// sample records one period and checks, with the churn held still, that
// each stable host routes exactly to the leases in etcd.
// The last one (tail) covers the ping chunks that ran on past the end.
func (s *soak) sample(ctx context.Context, stableHosts []*cluster.Host, revPerMin float64, tail bool) {
	r := row{at: time.Since(s.start).Round(time.Second).String(), revPerMin: revPerMin}
	if tail {
		r.at = "tail " + r.at
	}
	for _, h := range stableHosts {
		a := h.Agent()
		if a.Exited() {
			s.fail("%s's agent exited with %d", h, a.ExitCode())
			r.rssMB, r.threads, r.gorts = append(r.rssMB, "-"), append(r.threads, "-"), append(r.gorts, "-")
			continue
		}
		rss, thr := procStatus(a.Pid())
		g := goroutines(ctx, h)
		r.rssMB = append(r.rssMB, fmt.Sprintf("%.1f", float64(rss)/1024))
		r.threads = append(r.threads, strconv.Itoa(thr))
		r.gorts = append(r.gorts, strconv.Itoa(g))
	}
	for _, h := range s.churnHosts {
		if a := h.Agent(); a != nil && !a.Exited() {
			r.agentsUp++
		}
	}
	s.churnMu.Lock()
	for _, h := range stableHosts {
		err := cluster.Eventually(ctx, 30*time.Second, func() error { return s.matchesLeases(ctx, h) })
		if err != nil {
			s.fail("%s: %v", h, err)
		}
	}
	s.churnMu.Unlock()

	s.mu.Lock()
	r.sent, r.lost, r.joins, r.rel, r.crash = s.sent, s.lost, s.joins, s.released, s.crashed
	s.totalSent += s.sent
	s.totalLost += s.lost
	s.sent, s.lost, s.joins, s.released, s.crashed = 0, 0, 0, 0, 0
	s.rows = append(s.rows, r)
	s.mu.Unlock()
	s.t.Logf("%8s  pings %d sent %d lost  joins %d, left %d released %d crashed  etcd %.0f rev/min  RSS MB %s  threads %s  goroutines %s",
		r.at, r.sent, r.lost, r.joins, r.rel, r.crash, r.revPerMin, strings.Join(r.rssMB, "/"), strings.Join(r.threads, "/"), strings.Join(r.gorts, "/"))
}

// matchesLeases compares h's kernel state with the other leases in etcd. A
// crashed host's lease stays until its TTL runs out, and so do the peers'
// objects for it: both sides see the same expiry, so they still have to
// match. vxlan: one route per lease. udp: the one route for the network into
// flannel0, and a forwarding table (agentd_peers_programmed, on /metrics)
// with one entry per lease.
func (s *soak) matchesLeases(ctx context.Context, h *cluster.Host) error {
	return matchesLeases(ctx, s.cli, s.backend, h)
}

// matchesLeases is soak.matchesLeases for backend, reading the leases with
// cli; host-gw: one route per lease, through eth0 to its public IP.
func matchesLeases(ctx context.Context, cli *clientv3.Client, backend string, h *cluster.Host) error {
	resp, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		return err
	}
	own, err := subnetenv.Read(h.SubnetFile())
	if err != nil {
		return err
	}
	var want []string
	peers := 0
	for _, kv := range resp.Kvs {
		sn, _, err := subnet.ParseSubnetKey(strings.TrimPrefix(string(kv.Key), prefix+"/subnets/"))
		if err != nil {
			return err
		}
		if sn != own.Subnet.Masked() {
			peers++
			switch backend {
			case "vxlan":
				want = append(want, fmt.Sprintf("%s via %s dev flannel.1 proto 74 onlink", sn, sn.Addr()))
			case "host-gw":
				var l struct{ PublicIP string }
				if err := json.Unmarshal(kv.Value, &l); err != nil {
					return fmt.Errorf("lease %s: %w", kv.Key, err)
				}
				want = append(want, fmt.Sprintf("%s via %s dev eth0 proto 74", sn, l.PublicIP))
			}
		}
	}
	if backend == "udp" {
		want = append(want, network+" dev flannel0 proto 74")
		n, err := h.Metric(ctx, "agentd_peers_programmed")
		if err != nil {
			return err
		}
		if n != float64(peers) {
			return fmt.Errorf("forwarding table: agentd_peers_programmed is %v, the other leases are %d", n, peers)
		}
	}
	slices.Sort(want)
	routes, err := h.Routes()
	if err != nil {
		return err
	}
	var have []string
	for _, r := range routes {
		if strings.Contains(r, " proto 74") {
			have = append(have, r)
		}
	}
	if !slices.Equal(have, want) {
		return fmt.Errorf("routes do not match the leases:\nhave:\n%s\nwant:\n%s", strings.Join(have, "\n"), strings.Join(want, "\n"))
	}
	return nil
}

// procStatus reads VmRSS (kB) and Threads from /proc/<pid>/status.
func procStatus(pid int) (rssKB, threads int) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rssKB, _ = strconv.Atoi(f[1])
		case "Threads:":
			threads, _ = strconv.Atoi(f[1])
		}
	}
	return rssKB, threads
}

var udpPackets = regexp.MustCompile(`(?m)^agentd_udp_packets_total\{direction="(\w+)",result="(\w+)"\} (\d+)$`)

// udpCounters lists the udp datapath's non-zero packet counters on h's
// /metrics, for the report.
func udpCounters(ctx context.Context, h *cluster.Host) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, body, err := h.HealthGet(ctx, "/metrics")
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, m := range udpPackets.FindAllSubmatch(body, -1) {
		if string(m[3]) != "0" {
			out = append(out, fmt.Sprintf("%s %s %s", m[1], m[2], m[3]))
		}
	}
	return strings.Join(out, ", ")
}

// goroutines is go_goroutines from the agent's /metrics, or -1.
func goroutines(ctx context.Context, h *cluster.Host) int {
	n, err := h.Metric(ctx, "go_goroutines")
	if err != nil {
		return -1
	}
	return int(n)
}

func (s *soak) report() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "time\tpings sent\tlost\tjoins\treleased\tcrashed\tchurn up\tetcd rev/min\tRSS MB h1/h2/h3\tthreads\tgoroutines\t")
	for _, r := range s.rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t\n", r.at, r.sent, r.lost, r.joins, r.rel, r.crash, r.agentsUp,
			r.revPerMin, strings.Join(r.rssMB, "/"), strings.Join(r.threads, "/"), strings.Join(r.gorts, "/"))
	}
	tw.Flush()
	var p50, p99 time.Duration
	if n := len(s.joinReached); n > 0 {
		j := slices.Clone(s.joinReached)
		slices.Sort(j)
		p50, p99 = j[n/2], j[min(n-1, n*99/100)]
	}
	joins := len(s.joinReached)
	s.t.Logf("soak report (RSS and threads from /proc/<pid>/status, goroutines from each agent's /metrics):\n%s\n"+
		"stable pings: %d sent, %d lost (not counted: %d probes still in flight when their ping's deadline ended it); "+
		"%d joins, agent start → reached from h1's container p50 %v, p99 %v; %d failures",
		b.String(), s.totalSent, s.totalLost, s.inFlight, joins, p50.Round(time.Millisecond), p99.Round(time.Millisecond), len(s.failures))
	for _, f := range s.failures {
		s.t.Errorf("%s", f)
	}
	if joins == 0 {
		s.t.Errorf("no host joined during the soak")
	}
}

// startSoak starts a cluster of n hosts with the network config for
// backend, and agents on its first started hosts; once each of those is
// ready it gets a container, returned in the hosts' order.
func startSoak(t *testing.T, n, started int, backend string) (*cluster.Cluster, *clientv3.Client, []*cluster.Container) {
	c := cluster.Start(t, cluster.Options{Hosts: n})
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := cli.Put(ctx, prefix+"/config", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, backend)); err != nil {
		t.Fatal(err)
	}
	hosts := c.Hosts()[:started]
	for _, h := range hosts {
		if _, err := h.StartAgent(ctx); err != nil {
			t.Fatal(err)
		}
	}
	var cs []*cluster.Container
	for _, h := range hosts {
		if err := h.WaitReady(ctx, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		ct, err := h.AddContainer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, ct)
	}
	return c, cli, cs
}
