package subnet_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/delay"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/etcdtest"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/stats"
)

// stormHost is one host of an acquire storm: a manager on an etcd client of
// its own, which counts the host's requests.
type stormHost struct {
	m         *subnet.Manager
	reqs      atomic.Int64 // unary requests, each retry of the client's included
	bytes     atomic.Int64 // bytes of etcd's answers (gRPC messages as received)
	conflicts atomic.Int64 // transactions whose compare failed
	calls     int          // Acquire calls (the agent's retries)
	lease     subnet.Lease
	errs      []error
}

// stormFigures sums up a storm: how long until every host held a subnet, and
// per host the requests, lost transactions and Acquire calls.
type stormFigures struct {
	n                  int
	took               time.Duration
	reqMed, reqMax     int64
	bytesMed, bytesMax int64
	bytesSum           int64
	lostMed, lostMax   int64
	reqSum, lostSum    int64
	callsMax           int
	held, failed       int
	distinct, doubled  int
	firstErr           error
}

func (f stormFigures) String() string {
	return fmt.Sprintf("N=%d: %v until all held; requests/host median %d max %d (all %d); read/host median %s max %s (all %s); conflicts/host median %d max %d (all %d); Acquire calls/host max %d; %d held (%d distinct, %d shared), %d failed%s",
		f.n, f.took.Round(time.Millisecond), f.reqMed, f.reqMax, f.reqSum, kB(f.bytesMed), kB(f.bytesMax), kB(f.bytesSum),
		f.lostMed, f.lostMax, f.lostSum, f.callsMax, f.held, f.distinct, f.doubled, f.failed,
		func() string {
			if f.firstErr != nil {
				return "; an error: " + f.firstErr.Error()
			}
			return ""
		}())
}

// kB writes a byte count in kB.
func kB(n int64) string { return fmt.Sprintf("%.1f kB", float64(n)/1000) }

// readCounter is a gRPC stats handler that calls itself with the method and
// wire length of each message a client receives.
type readCounter func(method string, n int)

type methodKey struct{}

func (c readCounter) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, methodKey{}, info.FullMethodName)
}

func (c readCounter) HandleRPC(ctx context.Context, s stats.RPCStats) {
	if p, ok := s.(*stats.InPayload); ok {
		method, _ := ctx.Value(methodKey{}).(string)
		c(method, p.WireLength)
	}
}

func (readCounter) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

func (readCounter) HandleConn(context.Context, stats.ConnStats) {}

// stormClient returns a client of srv that counts h's requests.
func stormClient(tb testing.TB, srv *etcdtest.Server, h *stormHost) *clientv3.Client {
	cfg := srv.ClientConfig()
	cfg.DialOptions = append(cfg.DialOptions, grpc.WithStatsHandler(readCounter(func(_ string, n int) { h.bytes.Add(int64(n)) })), grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			h.reqs.Add(1)
			err := invoker(ctx, method, req, reply, cc, opts...)
			if r, ok := reply.(*etcdserverpb.TxnResponse); ok && err == nil && !r.Succeeded {
				h.conflicts.Add(1)
			}
			return err
		}))
	cli, err := clientv3.New(cfg)
	if err != nil {
		tb.Fatalf("etcd client: %v", err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// acquireStorm starts n hosts together, each calling Acquire as the agent
// does (each call bounded by 10 s, retried after a backoff of 0.5 s doubling
// to 10 s), until every host holds a lease or giveUp passes. prev, when not
// nil, gives host i's previous subnet, in a subnet.env naming the host's
// identity as the agent writes it. Counters are reset after the clients
// connect, so only the storm's requests count.
func acquireStorm(tb testing.TB, srv *etcdtest.Server, net *subnet.Config, n int, prev func(int) netip.Prefix, giveUp time.Duration) ([]*stormHost, stormFigures) {
	hosts := make([]*stormHost, n)
	for i := range hosts {
		h := &stormHost{}
		cli := stormClient(tb, srv, h)
		if _, err := cli.Get(context.Background(), prefix+"/config"); err != nil {
			tb.Fatal(err)
		}
		h.reqs.Store(0)
		h.bytes.Store(0)
		mc := subnet.ManagerConfig{PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}), HostID: hostID(i), TTL: time.Hour}
		if prev != nil {
			mc.PreviousSubnet, mc.PreviousHostID = prev(i), mc.HostID
		}
		h.m = subnet.NewManager(subnet.NewRegistry(cli, prefix), net, mc)
		hosts[i] = h
	}
	ctx, cancel := context.WithTimeout(context.Background(), giveUp)
	defer cancel()
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := delay.Backoff{Min: 500 * time.Millisecond, Max: 10 * time.Second}
			<-start
			for ctx.Err() == nil {
				h.calls++
				cctx, ccancel := context.WithTimeout(ctx, 10*time.Second)
				l, err := h.m.Acquire(cctx, "vxlan", vxlanData)
				ccancel()
				if err == nil {
					h.lease = l
					return
				}
				if ctx.Err() == nil {
					h.errs = append(h.errs, err)
				}
				_ = delay.Sleep(ctx, b.Next())
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	f := stormFigures{n: n, took: time.Since(began)}
	reqs, lost, read := make([]int64, n), make([]int64, n), make([]int64, n)
	seen := map[netip.Prefix]int{}
	for i, h := range hosts {
		reqs[i], lost[i], read[i] = h.reqs.Load(), h.conflicts.Load(), h.bytes.Load()
		f.reqSum += reqs[i]
		f.bytesSum += read[i]
		f.lostSum += lost[i]
		f.callsMax = max(f.callsMax, h.calls)
		if len(h.errs) > 0 && f.firstErr == nil {
			f.firstErr = h.errs[0]
		}
		if h.lease.Subnet.IsValid() {
			f.held++
			seen[h.lease.Subnet]++
		} else {
			f.failed++
		}
	}
	for _, c := range seen {
		f.distinct++
		if c > 1 {
			f.doubled++
		}
	}
	slices.Sort(reqs)
	slices.Sort(lost)
	slices.Sort(read)
	f.bytesMed, f.bytesMax = read[n/2], read[n-1]
	f.reqMed, f.reqMax, f.lostMed, f.lostMax = reqs[n/2], reqs[n-1], lost[n/2], lost[n-1]
	return hosts, f
}

// BenchmarkAcquireStorm: n hosts acquire their leases at the same moment (a
// cluster booting, an autoscaling group coming up, every agent restarting
// after etcd lost its data), each on an etcd client of its own, as the agent
// retries Acquire. "fresh" hosts have no previous subnet; "previous" hosts
// each find theirs in subnet.env (etcd emptied under running agents);
// "restart" hosts find their own live lease and subnet.env (a whole cluster
// powered up again, etcd with its data). Run with -benchtime=1x: each round
// is a storm on a new etcd.
func BenchmarkAcquireStorm(b *testing.B) {
	for _, n := range []int{50, 200, 500, 1000, 5000} {
		for _, kind := range []string{"fresh", "previous", "restart"} {
			b.Run(fmt.Sprintf("%s/N=%d", kind, n), func(b *testing.B) {
				var last stormFigures
				for range b.N {
					b.StopTimer()
					srv := etcdtest.Start(b)
					cli := srv.Client(b)
					// A /11 of /24s: 8191 subnets, room for every storm.
					const cfg = `{"Network":"10.224.0.0/11","Backend":{"Type":"vxlan"}}`
					if _, err := cli.Put(context.Background(), prefix+"/config", cfg); err != nil {
						b.Fatal(err)
					}
					net, err := subnet.NewRegistry(cli, prefix).GetConfig(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					var prev func(int) netip.Prefix
					if kind != "fresh" {
						prev = func(i int) netip.Prefix { sn, _ := net.NthSubnet(i); return sn }
					}
					if kind == "restart" {
						stormLeases(b, cli, n, prev)
					}
					b.StartTimer()
					_, last = acquireStorm(b, srv, net, n, prev, 5*time.Minute)
					b.StopTimer()
					if last.failed > 0 || last.doubled > 0 {
						b.Errorf("%v", last)
					}
				}
				b.ReportMetric(last.took.Seconds(), "s/storm")
				b.ReportMetric(float64(last.reqMed), "req-med/host")
				b.ReportMetric(float64(last.reqMax), "req-max/host")
				b.ReportMetric(float64(last.bytesMed)/1000, "kB-med/host")
				b.ReportMetric(float64(last.bytesMax)/1000, "kB-max/host")
				b.ReportMetric(float64(last.bytesSum)/1e6, "MB-all")
				b.ReportMetric(float64(last.lostMed), "conflicts-med/host")
				b.ReportMetric(float64(last.lostMax), "conflicts-max/host")
				b.Logf("%v", last)
			})
		}
	}
	// 20 hosts and a /20 of /24s, 15 subnets: the 5 left over fail with
	// ErrNoFreeSubnet and keep retrying, each Acquire call one list.
	b.Run("short/N=20", func(b *testing.B) {
		for range b.N {
			srv := etcdtest.Start(b)
			cli := srv.Client(b)
			const cfg = `{"Network":"10.244.0.0/20","Backend":{"Type":"vxlan"}}`
			if _, err := cli.Put(context.Background(), prefix+"/config", cfg); err != nil {
				b.Fatal(err)
			}
			net, err := subnet.NewRegistry(cli, prefix).GetConfig(context.Background())
			if err != nil {
				b.Fatal(err)
			}
			hosts, f := acquireStorm(b, srv, net, 20, nil, 10*time.Second)
			if f.held != 15 || f.doubled > 0 {
				b.Errorf("%v", f)
			}
			for i, h := range hosts {
				if h.lease.Subnet.IsValid() {
					continue
				}
				for _, err := range h.errs {
					if !errors.Is(err, subnet.ErrNoFreeSubnet) {
						b.Errorf("host %d: %v, want ErrNoFreeSubnet", i, err)
					}
				}
				b.Logf("host %d left over: %d Acquire calls in %v, %d requests, %d conflicts; last error: %v",
					i, h.calls, f.took.Round(time.Second), h.reqs.Load(), h.conflicts.Load(), h.errs[len(h.errs)-1])
			}
			b.Logf("%v", f)
		}
	})
}

// stormLeases writes the live lease of each of n storm hosts, host i's of
// the subnet prev(i), each on an etcd lease of its own, 16 at a time.
func stormLeases(tb testing.TB, cli *clientv3.Client, n int, prev func(int) netip.Prefix) {
	reg := subnet.NewRegistry(cli, prefix)
	var g errgroup.Group
	g.SetLimit(16)
	for i := range n {
		g.Go(func() error {
			ctx := context.Background()
			gr, err := cli.Grant(ctx, 3600)
			if err != nil {
				return err
			}
			attrs := subnet.LeaseAttrs{PublicIP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)}),
				BackendType: "vxlan", BackendData: vxlanData, HostID: hostID(i)}
			_, ok, err := reg.Create(ctx, prev(i), netip.Prefix{}, attrs, int64(gr.ID))
			if err == nil && !ok {
				err = fmt.Errorf("lease of %s exists", prev(i))
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		tb.Fatal(err)
	}
}

// TestAcquireLookingFurtherAfterLostRaces: a host that loses the race for the
// subnet it picked (another host created the key first) picks again among
// more free subnets. Hosts starting together all see the same first free
// subnets; with a window that stays at the first 100, at most 100 of them
// could win a round, so a storm of N hosts took N/100 rounds, each a list of
// every lease by every loser (at N = 1000, Acquire calls outlasted the
// agent's 10 s deadline). Here a rival takes each key the host asks for
// just before it does, 8 times: the picks after each loss must come from a
// window doubled each time (the k-th loss: the first 100·2^k free subnets),
// and so not stay among the first 100 free.
// losingRaces returns an interceptor under which Acquire loses its first
// losses races: before each create transaction for a key not tried yet, up
// to losses of them, another host's lease is written to that key. tried
// collects the keys tried, in order.
func losingRaces(e *env, losses int, tried *[]string) grpc.UnaryClientInterceptor {
	rival := `{"PublicIP":"198.18.0.2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}`
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if r, ok := req.(*etcdserverpb.TxnRequest); ok && len(r.Compare) == 1 &&
			r.Compare[0].Target == etcdserverpb.Compare_VERSION && r.Compare[0].GetVersion() == 0 {
			key := string(r.Compare[0].Key)
			if !slices.Contains(*tried, key) {
				*tried = append(*tried, key)
				if len(*tried) <= losses {
					if _, err := e.cli.Put(ctx, key, rival); err != nil {
						return err
					}
				}
			}
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}

func TestAcquireLookingFurtherAfterLostRaces(t *testing.T) {
	t.Parallel()
	const losses = 8
	e := newEnv(t, `{"Network":"10.0.0.0/8","Backend":{"Type":"vxlan"}}`)
	var tried []string
	cli := e.interceptedClient(t, losingRaces(e, losses, &tried))
	m := subnet.NewManager(subnet.NewRegistry(cli, prefix), e.net,
		subnet.ManagerConfig{PublicIP: netip.MustParseAddr("198.18.0.1"), HostID: hostID(1), TTL: time.Hour})
	l := acquire(t, m)
	if len(tried) != losses+1 || e.reg.LeaseKey(l.Subnet, l.IPv6Subnet) != tried[losses] {
		t.Fatalf("leased %s after trying %q, want the %d-th key tried", l.Subnet, tried, losses+1)
	}
	// The k-th try's rank among the free subnets: its index less the keys
	// the rival took below it.
	var ranks []int
	for k, key := range tried {
		sn, _, err := subnet.ParseSubnetKey(strings.TrimPrefix(key, e.reg.SubnetsPrefix()))
		if err != nil {
			t.Fatal(err)
		}
		i, ok := e.net.SubnetIndex(sn)
		if !ok {
			t.Fatalf("tried %s, not a subnet of the pool", sn)
		}
		ranks = append(ranks, i)
		for _, prev := range tried[:k] {
			if psn, _, _ := subnet.ParseSubnetKey(strings.TrimPrefix(prev, e.reg.SubnetsPrefix())); psn.Addr().Less(sn.Addr()) {
				ranks[k]--
			}
		}
		if window := 100 << k; ranks[k] >= window {
			t.Errorf("try %d: free subnet number %d, want one of the first %d", k+1, ranks[k]+1, window)
		}
	}
	// Each of the last tries is drawn from 1600 or more free subnets: all
	// of them among the first 100 is a window that did not grow.
	if slices.Max(ranks) < 100 {
		t.Errorf("after %d lost races every pick was still among the first 100 free subnets (ranks %v)", losses, ranks)
	}
	t.Logf("ranks among the free subnets of the keys tried: %v", ranks)
}

// TestEtcdEmptiedUnderManyRunningHosts: etcd loses its data (restarted with
// an empty data directory) under 50 running hosts. Every host must take its
// own subnet back (the same key, on a new etcd lease), none may stop with
// ErrLeaseLost or take another's subnet, and each must see all the others
// again; the log gives the time this took and each host's requests.
func TestEtcdEmptiedUnderManyRunningHosts(t *testing.T) {
	t.Parallel()
	const n = 50
	r := startRestartable(t, 0)
	e := r.env(net16)
	hosts, f := acquireStorm(t, &r.srv, e.net, n, nil, time.Minute)
	if f.held != n || f.doubled != 0 {
		t.Fatalf("acquire: %v", f)
	}
	stops := make([]func() error, n)
	for i, h := range hosts {
		stops[i] = run(t, h.m)
	}
	allBack := func() error {
		for i, h := range hosts {
			if got := len(h.m.Peers()); got != n-1 {
				return fmt.Errorf("host %d sees %d peers", i, got)
			}
			val, id, ok := e.raw(t, h.lease)
			if !ok || !strings.Contains(val, fmt.Sprintf("%q", h.lease.Attrs.PublicIP)) || id == 0 {
				return fmt.Errorf("host %d: key of %s %q on etcd lease %x", i, h.lease.Subnet, val, id)
			}
		}
		return nil
	}
	eventually(t, "every host sees every other", allBack)
	for _, h := range hosts {
		h.reqs.Store(0)
		h.conflicts.Store(0)
	}

	r.stop()
	r.start(false)
	began := time.Now()
	if _, err := e.cli.Put(context.Background(), prefix+"/config", net16); err != nil {
		t.Fatal(err)
	}
	eventuallyWithin(t, 2*time.Minute, "every host's key back, every host sees every other", allBack)
	took := time.Since(began)
	reqs := make([]int64, n)
	var relists, reacquired int64
	for i, h := range hosts {
		reqs[i] = h.reqs.Load()
		relists += h.m.Stats.Relists.Load()
		reacquired += h.m.Stats.Reacquired.Load()
		if c := h.conflicts.Load(); c != 0 {
			t.Errorf("host %d: %d transactions failed", i, c)
		}
	}
	for i, stop := range stops {
		if err := stop(); err != nil {
			t.Errorf("host %d: Run: %v", i, err)
		}
	}
	slices.Sort(reqs)
	t.Logf("N=%d: %v until every key was back and seen by all; requests/host median %d max %d (all %d); relists %d, reacquires %d",
		n, took.Round(time.Millisecond), reqs[n/2], reqs[n-1], func() (s int64) {
			for _, r := range reqs {
				s += r
			}
			return s
		}(), relists, reacquired)
}
