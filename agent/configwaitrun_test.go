package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// TestConfigChangeWakesWaitingAgent: an agent out of subnets retries with
// a backoff that grows to 5–10 s. The operator widens the pool right after
// one of its attempts (seen as etcd's range count rising, then still). The
// agent leases a subnet of the wider pool within 2 s, not at its next
// attempt: the change of the config key ends the wait. Before 2026-12-06
// the retry slept on, and the agent leased 4.7 s or more later.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestConfigChangeWakesWaitingAgent(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/wake/config": `{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"fake"}}`,
		// Another host's reservation: the pool's one subnet is taken.
		"/wake/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2","BackendType":"fake"}`,
	}, configWakeChild)
}

func configWakeChild(t *testing.T, etcd string) {
	wakeChild(t, etcd, "/wake", "out of subnets: all 1 subnets",
		`{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.2.0","Backend":{"Type":"fake"}}`, "10.244.2.1/24")
}

// TestConfigFixedWakesWaitingAgent: an agent started with an invalid
// network config reads it again with a backoff that grows to 5–10 s. The
// operator fixes it right after one of its reads: the agent reads it again
// within 2 s, as the change of the key ends the wait, and leases. Before
// 2026-12-06 it read the key again only at its next attempt, up to 10 s
// later.
func TestConfigFixedWakesWaitingAgent(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/fixed/config": `{"Network":"10.244.0.0/16","SubnetLen":31,"Backend":{"Type":"fake"}}`,
	}, func(t *testing.T, ep string) {
		wakeChild(t, ep, "/fixed", `cannot read the network config; retrying`,
			`{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`, "")
	})
}

// wakeChild runs an agent with the etcd prefix prefix until it has logged
// waiting (a failure it retries with a backoff), lets the backoff grow,
// writes config right after an attempt, and checks that the agent is ready
// within 2 s with the subnet want ("" for any) in subnet.env.
func wakeChild(t *testing.T, etcd, prefix, waiting, config, want string) {
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, childLogger(t, logs))
	stop := runChildAgent(t, ctx, a)
	defer stop()
	cli := childEtcd(t, etcd)

	if err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if logs.count(waiting) == 0 {
			return fmt.Errorf("no %q logged", waiting)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// An attempt reads etcd (ranges); the quiet after it is the wait.
	// Once one wait has lasted 3.5 s (the backoff's nominal delay is 4 s
	// or more), the next lasts at least 4 s (a nominal 8 s or more, drawn
	// from its upper half).
	attempt := waitForRanges(t, ctx, etcd)
	for {
		next := waitForRanges(t, ctx, etcd)
		gap := next.Sub(attempt)
		attempt = next
		if gap >= 3500*time.Millisecond {
			break
		}
	}
	widened := time.Now()
	t.Logf("an attempt ended %v before the config was changed", widened.Sub(attempt).Round(time.Millisecond))
	if _, err := cli.Put(ctx, prefix+"/config", config); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 20*time.Second, a.readyErr); err != nil {
		t.Fatal(err)
	}
	took := time.Since(widened)
	t.Logf("ready %v after the config was changed", took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("ready %v after the config was changed, right after an attempt; want within 2 s (the change of the key wakes the wait)", took.Round(time.Millisecond))
	}
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if want != "" && env.Subnet != netip.MustParsePrefix(want) {
		t.Errorf("subnet.env names %s, want %s", env.Subnet, want)
	}
}

// waitForRanges waits until etcd's count of reads (etcd_mvcc_range_total)
// rises and then stays still for 200 ms: an attempt to acquire a lease
// (its list of leases, its read of the config key) ended and the agent
// waits. It returns when the count last rose. Nothing else reads etcd
// while the agent waits for a lease.
func waitForRanges(t *testing.T, ctx context.Context, etcd string) time.Time {
	t.Helper()
	first, err := etcdRanges(ctx, etcd)
	if err != nil {
		t.Fatal(err)
	}
	last, rose := first, time.Time{}
	for ctx.Err() == nil {
		n, err := etcdRanges(ctx, etcd)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case n != last:
			last, rose = n, time.Now()
		case !rose.IsZero() && time.Since(rose) >= 200*time.Millisecond:
			return rose
		}
		time.Sleep(20 * time.Millisecond) // polling etcd's /metrics
	}
	t.Fatal(ctx.Err())
	return time.Time{}
}

// etcdRanges is etcd_mvcc_range_total from etcd's /metrics.
func etcdRanges(ctx context.Context, etcd string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, etcd+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "etcd_mvcc_range_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("etcd's /metrics has no etcd_mvcc_range_total")
}

// TestConfigTakenWhileWaiting: an agent out of subnets, holding no lease
// and so having written no subnet.env and programmed no peer, is given a
// config with another Network, SubnetLen and backend Type. It takes it as a
// start would: it lets the backend it prepared go (its Watch ends at once,
// which lets a udp backend's claim on the device go), prepares the new
// config's backend, leases a subnet of the new length in the new Network
// with it and writes that Network to subnet.env; it says so once, and
// nothing is pending. Before 2026-12-06 it kept the config it had read at
// its start, said "restart agentd to apply it", and went on waiting in the
// old, full pool. Once the lease is held, a change is again only pending
// until a restart: today's behaviour for a running agent.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again: the agent
//	               └─ etcd 198.18.0.254  a real etcd
func TestConfigTakenWhileWaiting(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/retake/config":                `{"Network":"10.244.0.0/20","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"fake"}}`,
		"/retake/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2","BackendType":"fake"}`,
	}, configRetakeChild)
}

// recBackend is the fake backend under another Type, recording the
// network config it was made with, and (once prepared: the config check
// makes backends it never prepares) whether it was let go (Watch called
// with its context done) before it ran.
type recBackend struct {
	fakeBackend
	typ      string
	network  *subnet.Config
	prepared func(*recBackend)
	mu       sync.Mutex
	dropped  bool
	ran      bool
}

func (b *recBackend) Type() string { return b.typ }

func (b *recBackend) Prepare(ctx context.Context) (json.RawMessage, error) {
	b.prepared(b)
	return b.fakeBackend.Prepare(ctx)
}

func (b *recBackend) Watch(ctx context.Context, wake func()) error {
	b.mu.Lock()
	if ctx.Err() != nil {
		b.dropped = true
	} else {
		b.ran = true
	}
	b.mu.Unlock()
	return b.fakeBackend.Watch(ctx, wake)
}

func (b *recBackend) state() (dropped, ran bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dropped, b.ran
}

func configRetakeChild(t *testing.T, etcd string) {
	const prefix = "/retake"
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newFakeAgent(cfg, childLogger(t, logs))
	var (
		mu    sync.Mutex
		built []*recBackend
	)
	factory := func(typ string) backend.Factory {
		return func(c backend.Config) (backend.Backend, error) {
			return &recBackend{typ: typ, network: c.Network, prepared: func(b *recBackend) {
				mu.Lock()
				defer mu.Unlock()
				built = append(built, b)
			}}, nil
		}
	}
	a.backends = backend.Registry{"fake": factory("fake"), "fake2": factory("fake2")}
	stop := runChildAgent(t, ctx, a)
	defer stop()
	cli := childEtcd(t, etcd)

	if err := cluster.Eventually(ctx, 30*time.Second, logs.seen("out of subnets: all 1 subnets", "no out-of-subnets failure logged")); err != nil {
		t.Fatal(err)
	}
	const next = `{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"fake2","Option":1}}`
	changed := time.Now()
	if _, err := cli.Put(ctx, prefix+"/config", next); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 20*time.Second, a.readyErr); err != nil {
		t.Fatalf("Network, SubnetLen and backend changed while the agent waited for a lease: not ready within 20 s: %v", err)
	}
	t.Logf("ready %v after the config changed", time.Since(changed).Round(time.Millisecond))

	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.244.0.0/16"); env.Network != want {
		t.Errorf("subnet.env's network %s, want %s", env.Network, want)
	}
	if env.Subnet.Bits() != 25 || !netip.MustParsePrefix("10.244.0.0/16").Contains(env.Subnet.Addr()) {
		t.Errorf("subnet.env's subnet %s, want a /25 of 10.244.0.0/16", env.Subnet)
	}
	own, err := cli.Get(ctx, prefix+"/subnets/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	var ours []string
	for _, kv := range own.Kvs {
		var v struct{ PublicIP, BackendType string }
		if err := json.Unmarshal(kv.Value, &v); err == nil && v.PublicIP == "198.18.0.1" {
			ours = append(ours, fmt.Sprintf("%s %s", kv.Key, v.BackendType))
		}
	}
	if len(ours) != 1 || !strings.HasSuffix(ours[0], "-25 fake2") {
		t.Errorf("this host's keys: %q, want one /25 of backend fake2", ours)
	}
	mu.Lock()
	got := append([]*recBackend(nil), built...)
	mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("%d backends prepared, want 2 (the start's, and the new config's)", len(got))
	}
	if d, r := got[0].state(); got[0].typ != "fake" || !d || r {
		t.Errorf("the start's backend: %s, let go %v, ran %v; want fake, let go before it ran", got[0].typ, d, r)
	}
	if d, r := got[1].state(); got[1].typ != "fake2" || d || !r || got[1].network.Network != netip.MustParsePrefix("10.244.0.0/16") || got[1].network.SubnetLen != 25 {
		t.Errorf("the new config's backend: %s with %v, let go %v, ran %v; want fake2 with Network 10.244.0.0/16 and SubnetLen 25, running", got[1].typ, got[1].network, d, r)
	}
	if n := logs.count(takenAnewMsg); n != 1 {
		t.Errorf("%d lines say the new config was taken and the backend made again, want 1", n)
	}
	if n := logs.count("restart agentd to apply it"); n != 0 {
		t.Errorf("%d lines ask for a restart to apply the config the agent took, want none", n)
	}
	if p := a.obs.status(a.health).ConfigPending; p != nil {
		t.Errorf("/status configPending %+v for the config the agent took, want none", *p)
	}

	// With the lease held, a change is pending until a restart, as before.
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"fake"}}`); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if p := a.obs.status(a.health).ConfigPending; p == nil || !strings.Contains(p.New, "SubnetLen=26") || p.Incompatible != "Backend.Type" {
			return fmt.Errorf("configPending %+v", p)
		}
		return nil
	}); err != nil {
		t.Errorf("SubnetLen and backend changed once the lease is held: %v; want them pending a restart, splitting the cluster", err)
	}
	mu.Lock()
	n := len(built)
	mu.Unlock()
	if n != 2 {
		t.Errorf("%d backends prepared once a config changed with the lease held, want still 2", n)
	}
	if n := logs.count("restart agentd to apply it"); n != 1 {
		t.Errorf("%d lines ask for a restart to apply a change made once the lease was held, want 1", n)
	}
}

// childLogger logs to logs and to the test.
func childLogger(t *testing.T, logs *logLines) logr.Logger {
	return funcr.New(func(prefix, args string) {
		logs.add(prefix, args)
		t.Log(prefix, args)
	}, funcr.Options{})
}

// runChildAgent runs a until the returned stop, which checks that Run ended
// without an error.
func runChildAgent(t *testing.T, ctx context.Context, a *agent) (stop func()) {
	rctx, rcancel := context.WithCancel(klog.NewContext(ctx, a.log))
	errc := make(chan error, 1)
	go func() { errc <- a.run(rctx) }()
	return func() {
		rcancel()
		if err := waitRun(t, errc); err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}
}

// runReadyChildAgent runs a as runChildAgent does and waits up to 30 s for
// it to be ready; if it is not, it stops a and fails the test.
func runReadyChildAgent(t *testing.T, ctx context.Context, a *agent) (stop func()) {
	t.Helper()
	stop = runChildAgent(t, ctx, a)
	if err := cluster.Eventually(ctx, 30*time.Second, a.readyErr); err != nil {
		stop()
		t.Fatalf("agent not ready: %v", err)
	}
	return stop
}

// childEtcd is a client of etcd, closed at the test's end.
func childEtcd(t *testing.T, etcd string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestDirectPeers: what the config watch counts for a VNI or Port change
// under DirectRouting, read from h1's kernel: of the peers in the running
// Network, those whose public IP is on eth0's segment (198.18.0.0/24) are
// routed to directly, the others (198.19.0.7, behind a router) are not;
// a lease outside the Network is no peer. No peer is 0 of 0, not a
// failure to tell (before 2026-12-06 it was, and a VNI change on a host
// with no peer yet was reported as a split).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1      this test binary again
//	               └─ etcd 198.18.0.254
func TestDirectPeers(t *testing.T) {
	cluster.RunInHost(t, nil, func(t *testing.T, _ string) { directPeersChild(t) })
}

func directPeersChild(t *testing.T) {
	cfg := hostConfig(t, "http://198.18.0.254:2379", "/direct")
	ext, err := FindExternalInterface(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	running := mustParseConfig(t, `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}`)
	lease := func(sn, pub string) subnet.Lease {
		return subnet.Lease{Subnet: netip.MustParsePrefix(sn), Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub)}}
	}
	peers := []subnet.Lease{
		lease("10.244.2.0/24", "198.18.0.2"),
		lease("10.244.3.0/24", "198.18.0.3"),
		lease("10.244.4.0/24", "198.19.0.7"),
		lease("10.245.5.0/24", "198.18.0.5"), // outside the Network
	}
	if d, n, ok := directPeers(peers, running, ext); d != 2 || n != 3 || !ok {
		t.Errorf("directPeers = %d of %d (ok %v), want 2 of 3", d, n, ok)
	}
	if d, n, ok := directPeers(nil, running, ext); d != 0 || n != 0 || !ok {
		t.Errorf("directPeers of no peer = %d of %d (ok %v), want 0 of 0: no peer is a count", d, n, ok)
	}
}

// TestConfigTakenWhileWaitingUDP: TestConfigTakenWhileWaiting with the real
// udp backend, whose Prepare takes the agent's claim on flannel0 and starts
// the descriptor keeper. An agent out of subnets given another Network
// lets its prepared backend go, which lets the claim go, so the new
// config's udp backend prepares (else: "another agentd runs the udp
// backend on flannel0") and leases in the new Network.
func TestConfigTakenWhileWaitingUDP(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/udpretake/config":                `{"Network":"10.244.0.0/20","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"udp"}}`,
		"/udpretake/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2"}`,
	}, func(t *testing.T, ep string) {
		udpRetakeChild(t, ep, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`)
	})
}

// TestConfigTakenWhileWaitingUDPPort is TestConfigTakenWhileWaitingUDP with
// another udp Port in the new config, which a waiting agent takes since
// 2238ca3 (and which rolls host by host since 818a27c). The dropped
// backend's device queues and sockets stayed open in the agent: the new
// Prepare, needing sockets on 8286, found flannel0's queues held by "a
// process that this agent cannot see", itself, and the agent exited.
func TestConfigTakenWhileWaitingUDPPort(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/udpretake/config":                `{"Network":"10.244.0.0/20","SubnetMin":"10.244.1.0","SubnetMax":"10.244.1.0","Backend":{"Type":"udp"}}`,
		"/udpretake/subnets/10.244.1.0-24": `{"PublicIP":"198.18.0.2"}`,
	}, func(t *testing.T, ep string) {
		udpRetakeChild(t, ep, `{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8286}}`)
	})
}

// udpRetakeChild runs the agent until it waits for a free subnet, writes
// newCfg, and wants the agent ready on it.
func udpRetakeChild(t *testing.T, etcd, newCfg string) {
	const prefix = "/udpretake"
	cfg := hostConfig(t, etcd, prefix)
	logs := &logLines{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := childLogger(t, logs)
	a := &agent{cfg: cfg, log: log, backends: Backends(), leftovers: leftovers(), health: newHealth(log), obs: newObserver()}
	stop := runChildAgent(t, ctx, a)
	defer stop()
	cli := childEtcd(t, etcd)
	if err := cluster.Eventually(ctx, 30*time.Second, logs.seen("out of subnets: all 1 subnets", "no out-of-subnets failure logged")); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"/config", newCfg); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 20*time.Second, a.readyErr); err != nil {
		t.Fatalf("Network changed while the udp agent waited for a lease: not ready within 20 s: %v", err)
	}
	env, err := subnetenv.Read(cfg.SubnetFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.244.0.0/16"); env.Network != want {
		t.Errorf("subnet.env's network %s, want %s", env.Network, want)
	}
	if n := logs.count(takenAnewMsg); n != 1 {
		t.Errorf("%d lines say the new config was taken and the backend made again, want 1", n)
	}
	// Nothing in the host (agent or keeper) holds the first backend's
	// sockets once the second's are made on another port.
	if strings.Contains(newCfg, `"Port":8286`) {
		out, err := exec.Command("ss", "-H", "-uanp", "sport = :8285").CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) != 0 {
			t.Errorf("UDP sockets on port 8285 after the switch to 8286 (ss: %v):\n%s", err, out)
		}
	}
}
