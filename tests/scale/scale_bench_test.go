package scale

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	prefix = "/coreos.com/network"
	// config: /29 subnets of the overlay, so 8192 hosts fit in 10.244.0.0/16.
	config = `{"Network":"10.244.0.0/16","SubnetLen":29,"Backend":{"Type":%q}}`
	// routeProto marks agentd's routes.
	routeProto = 74
	ready      = 2 * time.Minute
)

var (
	backends = []string{"vxlan", "host-gw"}
	sizes    = []int{100, 1000, 5000}
	// churnRates are events per second (half joins, half leaves) at N=1000.
	churnRates = []int{10, 100}
	// settleTime is how long after a cold start the settled RSS is read.
	settleTime = 10 * time.Second
)

// env is one cluster: etcd, host h1 running the real agent, and the
// generator playing every other host.
type env struct {
	b   *testing.B
	ctx context.Context
	c   *cluster.Cluster
	h   *cluster.Host
	gen *Generator
	a   *cluster.Agent
}

func newEnv(b *testing.B, backend string, n int) *env {
	b.Helper()
	return newEnvWith(b, backend, n, cluster.Options{})
}

// newEnvWith is newEnv with other cluster options (one host, b.Logf).
func newEnvWith(b *testing.B, backend string, n int, opts cluster.Options) *env {
	b.Helper()
	opts.Hosts, opts.Logf = 1, b.Logf
	c := cluster.Start(b, opts)
	ctx := context.Background()
	cli, err := c.EtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"/config", fmt.Sprintf(config, backend)); err != nil {
		b.Fatal(err)
	}
	// Build before anything is timed.
	if _, err := c.Binary(ctx, "agentd"); err != nil {
		b.Fatal(err)
	}
	h := c.Host(1)
	// The virtual hosts' addresses are on-link for host-gw, as peers on one
	// L2 segment are. Nothing is ever sent to them.
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		b.Fatal(err)
	}
	onlink := netip.PrefixFrom(netip.MustParseAddr("198.19.255.254"), 16)
	if err := h.WithNetlink(func(nl *netlink.Handle) error {
		return nl.AddrAdd(eth0, &netlink.Addr{IPNet: netipToIPNet(onlink)})
	}); err != nil {
		b.Fatal(err)
	}
	gen, err := NewGenerator(ctx, cli, prefix, backend)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(gen.Close)
	start := time.Now()
	if err := gen.Populate(ctx, n); err != nil {
		b.Fatal(err)
	}
	b.Logf("%s: %d virtual hosts written in %v", backend, n, time.Since(start).Round(time.Millisecond))
	return &env{b: b, ctx: ctx, c: c, h: h, gen: gen}
}

// ourRoutes counts agentd's routes in h1.
func (e *env) ourRoutes() int {
	var rs []netlink.Route
	err := e.h.WithNetlink(func(nl *netlink.Handle) (err error) {
		rs, err = nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		return err
	})
	if err != nil {
		return -1
	}
	return len(rs)
}

// coldResult is one cold start.
type coldResult struct {
	Backend    string
	N          int
	Seconds    float64 // agent start → every peer's route in the kernel
	Objects    int     // kernel objects programmed
	ObjPerSec  float64
	RSSMB      float64 // when the last route appeared
	SettledMB  float64 // settleTime later, nothing having changed
	Goroutines int
	CPUSeconds float64 // agent CPU time for the whole cold start
}

// cold starts the agent with n peers already in etcd and waits until all n
// routes are in the kernel.
func (e *env) cold(backend string, n int) coldResult {
	e.b.Helper()
	start := time.Now()
	a, err := e.h.StartAgent(e.ctx)
	if err != nil {
		e.b.Fatal(err)
	}
	e.a = a
	err = cluster.Eventually(e.ctx, ready, func() error {
		if got := e.ourRoutes(); got != n {
			return fmt.Errorf("%d of %d routes", got, n)
		}
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
	took := time.Since(start)
	if err := e.h.WaitReady(e.ctx, ready); err != nil {
		e.b.Fatal(err)
	}
	objects := n
	if backend == "vxlan" {
		objects = 3 * n // FDB entry, neighbour, route
	}
	r := coldResult{Backend: backend, N: n, Seconds: took.Seconds(), Objects: objects,
		ObjPerSec: float64(objects) / took.Seconds(), RSSMB: rssMB(a.Pid()), Goroutines: e.goroutines(),
		CPUSeconds: cpuSeconds(a.Pid())}
	// The start-up garbage (the decoded list, the first dumps) is returned
	// to the kernel by the runtime's scavenger over the next seconds.
	time.Sleep(settleTime) // the wait is the measurement
	r.SettledMB = rssMB(a.Pid())
	return r
}

func (e *env) goroutines() int {
	n, err := e.h.Metric(e.ctx, "go_goroutines")
	if err != nil {
		e.b.Fatal(err)
	}
	return int(n)
}

// churnResult is a churn window at N peers.
type churnResult struct {
	Backend   string
	N         int
	Rate      int // events per second
	Events    int
	JoinP50MS float64
	JoinP99MS float64
	LeaveP99  float64 // ms
	CPUPct    float64 // agent CPU over the window, % of one core
}

// churn joins and leaves virtual hosts at rate events/s for d (alternating,
// so N stays), and times each event from etcd's acknowledgement to the
// route's appearance or removal in h1's kernel (netlink notifications).
func (e *env) churn(backend string, n, rate int, d time.Duration) churnResult {
	e.b.Helper()
	type mark struct {
		at   time.Time
		join bool
	}
	var (
		mu      sync.Mutex
		pending = map[netip.Prefix]mark{}
		joins   []time.Duration
		leaves  []time.Duration
	)
	updates := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	defer close(done)
	err := e.h.Do(func() error {
		return netlink.RouteSubscribeWithOptions(updates, done, netlink.RouteSubscribeOptions{
			ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true})
	})
	if err != nil {
		e.b.Fatal(err)
	}
	go func() {
		for u := range updates {
			if u.Protocol != routeProto || u.Dst == nil {
				continue
			}
			sn := ipNetToPrefix(u.Dst)
			now := time.Now()
			mu.Lock()
			if m, ok := pending[sn]; ok && m.join == (u.Type == unix.RTM_NEWROUTE) {
				if m.join {
					joins = append(joins, now.Sub(m.at))
				} else {
					leaves = append(leaves, now.Sub(m.at))
				}
				delete(pending, sn)
			}
			mu.Unlock()
		}
	}()

	cpu0, t0 := cpuSeconds(e.a.Pid()), time.Now()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	events := 0
	for time.Since(t0) < d {
		<-tick.C
		join := events%2 == 0
		mu.Lock() // held across the write, so its notification waits for the mark
		var sn netip.Prefix
		var err error
		sent := time.Now()
		if join {
			sn, _, err = e.gen.Join(e.ctx)
		} else {
			// Not a host whose join is still in flight: the agent may
			// rightly never program a lease that came and went at once.
			sn, _, err = e.gen.LeaveWhere(e.ctx, func(sn netip.Prefix) bool { _, busy := pending[sn]; return !busy })
		}
		if err == nil {
			pending[sn] = mark{sent, join}
		}
		mu.Unlock()
		if err != nil {
			e.b.Fatal(err)
		}
		events++
	}
	tick.Stop()
	err = cluster.Eventually(e.ctx, 10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(pending) > 0 {
			return fmt.Errorf("%d events not yet in the kernel", len(pending))
		}
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
	cpu := (cpuSeconds(e.a.Pid()) - cpu0) / time.Since(t0).Seconds() * 100
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(joins)
	slices.Sort(leaves)
	return churnResult{Backend: backend, N: n, Rate: rate, Events: events,
		JoinP50MS: ms(pct(joins, 0.5)), JoinP99MS: ms(pct(joins, 0.99)), LeaveP99: ms(pct(leaves, 0.99)), CPUPct: cpu}
}

func BenchmarkScale(b *testing.B) {
	cluster.RequireRoot(b)
	var (
		colds  []coldResult
		churns []churnResult
		idle   []idleSource
	)
	for _, backend := range backends {
		for _, n := range sizes {
			b.Run(fmt.Sprintf("cold/%s/N=%d", backend, n), func(b *testing.B) {
				var r coldResult
				for b.Loop() {
					r = newEnv(b, backend, n).cold(backend, n)
				}
				colds = append(colds, r)
				b.ReportMetric(r.Seconds, "s-to-programmed")
				b.ReportMetric(r.ObjPerSec, "objects/s")
				b.ReportMetric(r.RSSMB, "RSS-MB")
				b.ReportMetric(r.SettledMB, "settled-RSS-MB")
				b.ReportMetric(float64(r.Goroutines), "goroutines")
			})
		}
		b.Run(fmt.Sprintf("churn/%s/N=1000", backend), func(b *testing.B) {
			for b.Loop() {
				e := newEnv(b, backend, 1000)
				e.cold(backend, 1000)
				for _, rate := range churnRates {
					r := e.churn(backend, 1000, rate, max(10*time.Second, time.Duration(200/rate)*time.Second))
					churns = append(churns, r)
					b.ReportMetric(r.JoinP99MS, fmt.Sprintf("join-p99-ms@%d/s", rate))
				}
			}
		})
	}
	b.Run("idle/vxlan/N=1000", func(b *testing.B) {
		for b.Loop() {
			e := newEnvWith(b, "vxlan", 1000, cluster.Options{
				EtcdArgs: []string{"--watch-progress-notify-interval=" + idleProgress.String()}})
			idle = idleEtcd(e)
		}
		var requests float64
		for _, r := range idle {
			b.ReportMetric(r.PerHour, r.Unit)
			if r.Request {
				requests += r.PerHour
			}
		}
		b.ReportMetric(requests, "requests/h")
	})
	if len(colds) != len(backends)*len(sizes) || len(churns) != len(backends)*len(churnRates) || len(idle) == 0 || b.Failed() {
		b.Logf("partial run (a -bench filter or a failure): no report written")
		return
	}
	dir := resultsDir(b)
	writeReport(b, dir, colds, churns, idle)
}

func resultsDir(b *testing.B) string {
	b.Helper()
	dir := os.Getenv("AGENTD_RESULTS")
	if dir == "" {
		wd, _ := os.Getwd()
		dir = filepath.Join(wd, "..", "..", "results", "scale")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	return dir
}

func rssMB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return -1
}

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func machine() string {
	var u unix.Utsname
	unix.Uname(&u)
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d CPU (%s), Linux %s, %s", runtime.NumCPU(), model, unix.ByteSliceToString(u.Release[:]), runtime.Version())
}
