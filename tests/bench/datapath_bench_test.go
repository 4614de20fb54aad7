// Package bench measures agentd's datapath and convergence on the namespace
// cluster, side by side with the raw underlay in the same run:
//
//	go test -run '^$' -bench . -benchtime 3x ./tests/bench/
//
// BenchmarkThroughput reports container-to-container TCP throughput for each
// backend and the raw host-to-host throughput measured alternately with it,
// and their ratio; the idle round-trip time (ping) of both and its ratio;
// the round trip under load (pings sent while each stream runs) of both and
// its ratio;
// and the CPU the overlay run used, the agents' own (the udp backend's
// datapath runs there) and the machine's; and the agents' resident memory
// at the end. With AGENTD_FLANNELD_BIN set to a flanneld binary (make bench
// builds one, see make flanneld-bin), BenchmarkThroughput/flanneld-udp
// measures flanneld's own udp backend the same way, for comparison.
// BenchmarkJoin reports how long a new host's agent takes,
// from its start, until every existing peer has a route to its subnet.
package bench

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
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
)

const (
	network = "10.244.0.0/16"
	prefix  = "/coreos.com/network"
	ready   = 30 * time.Second
	// iperfSeconds is the length of one iperf3 run.
	iperfSeconds = 3
)

// backends are measured for throughput and latency ("flanneld-<type>" is
// flanneld running that backend); joinBackends for join latency, which looks
// for each peer's per-subnet kernel route (the udp backend has none: its
// peers are entries of a userspace table).
var (
	backends     = []string{"vxlan", "host-gw", "udp", "flanneld-udp"}
	joinBackends = []string{"vxlan", "host-gw"}
)

// benchCluster is a cluster with the network config for one backend written
// and an agent ready on each of its first hosts.
type benchCluster struct {
	b   *testing.B
	ctx context.Context
	c   *cluster.Cluster
	// pids are the agents' (or flanneld's) process IDs, by host.
	pids []int
}

// newBenchCluster starts hosts hosts and an agent on the first agents of
// them, or flanneld where backend is "flanneld-<type>".
func newBenchCluster(b *testing.B, backend string, hosts, agents int) *benchCluster {
	b.Helper()
	cluster.RequireRoot(b)
	c := cluster.Start(b, cluster.Options{Hosts: hosts, Logf: b.Logf})
	ctx := context.Background()
	cli, err := c.EtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	typ, flanneld := strings.CutPrefix(backend, "flanneld-")
	cfg := fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, typ)
	if _, err := cli.Put(ctx, prefix+"/config", cfg); err != nil {
		b.Fatal(err)
	}
	bc := &benchCluster{b: b, ctx: ctx, c: c}
	if flanneld {
		bin := cluster.FlanneldBin(b)
		for _, h := range c.Hosts()[:agents] {
			p, err := h.StartFlanneld(ctx, bin, ready)
			if err != nil {
				b.Fatal(err)
			}
			bc.pids = append(bc.pids, p.Pid())
		}
		return bc
	}
	for _, h := range c.Hosts()[:agents] {
		a, err := h.StartAgent(ctx)
		if err != nil {
			b.Fatal(err)
		}
		bc.pids = append(bc.pids, a.Pid())
	}
	for _, h := range c.Hosts()[:agents] {
		if err := h.WaitReady(ctx, ready); err != nil {
			b.Fatalf("%s not ready: %v", h, err)
		}
	}
	return bc
}

// iperf3Result is the part of `iperf3 -J` output used here.
type iperf3Result struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
		CPU struct {
			HostTotal   float64 `json:"host_total"`
			RemoteTotal float64 `json:"remote_total"`
		} `json:"cpu_utilization_percent"`
	} `json:"end"`
	Error string `json:"error"`
}

// iperf measures one single-stream TCP run from client to server's address
// and returns bits per second, and the median round trip of rttPings pings
// from client to the same address sent while the stream runs: what another
// flow between the two sees during a bulk transfer. The server runs only for
// this one test.
func (bc *benchCluster) iperf(client, server *cluster.Namespace, addr netip.Addr) (bps, loadedRTT float64) {
	bc.b.Helper()
	srv, err := server.Start("iperf3", "-s", "-1", "-B", addr.String())
	if err != nil {
		bc.b.Fatal(err)
	}
	defer srv.Kill()
	// iperf3 -s -1 serves exactly one client, so readiness is waited for
	// by retrying the client itself: a refused connection fails fast.
	var res iperf3Result
	var running atomic.Bool
	running.Store(true)
	done := make(chan error, 1)
	go func() {
		defer running.Store(false)
		done <- cluster.Eventually(bc.ctx, 10*time.Second, func() error {
			out, err := client.Exec(bc.ctx, "iperf3", "-J", "-c", addr.String(), "-t", fmt.Sprint(iperfSeconds))
			res = iperf3Result{}
			if jerr := json.Unmarshal(out, &res); jerr != nil {
				if err != nil {
					return err
				}
				return fmt.Errorf("iperf3 output is not JSON: %v", jerr)
			}
			if res.Error != "" {
				return fmt.Errorf("iperf3: %s", res.Error)
			}
			return err
		})
	}()
	// The stream runs once the server has its second connection (the
	// first is iperf3's control connection).
	werr := cluster.Eventually(bc.ctx, 10*time.Second, func() error {
		if !running.Load() {
			return nil // failed or done: reported below
		}
		out, err := server.Exec(bc.ctx, "ss", "-tnH", "state", "established", "( sport = :5201 )")
		if err != nil {
			return err
		}
		if n := bytes.Count(out, []byte("\n")); n < 2 {
			return fmt.Errorf("%d iperf3 connections established", n)
		}
		return nil
	})
	if werr == nil && running.Load() {
		loadedRTT = bc.rtt(client, addr)
	}
	ended := !running.Load()
	if err := <-done; err != nil {
		bc.b.Fatalf("iperf3 %s -> %s: %v", client.Short, addr, err)
	}
	if res.End.SumReceived.BitsPerSecond <= 0 {
		bc.b.Fatalf("iperf3 %s -> %s measured nothing", client.Short, addr)
	}
	switch {
	case werr != nil:
		bc.b.Fatalf("iperf3 %s -> %s: its stream was not seen: %v", client.Short, addr, werr)
	case ended:
		bc.b.Fatalf("iperf3 %s -> %s ended before the pings sent under load did (%d pings %v apart in a %d s run)",
			client.Short, addr, rttPings, pingInterval, iperfSeconds)
	}
	return res.End.SumReceived.BitsPerSecond, loadedRTT
}

// BenchmarkThroughput: each iteration runs iperf3 once host-to-host on the
// underlay and once container-to-container through the backend, so both see
// the same machine load. Reported: Gbit/s of each and overlay/raw.
func BenchmarkThroughput(b *testing.B) {
	for _, backend := range backends {
		b.Run(backend, func(b *testing.B) {
			bc := newBenchCluster(b, backend, 2, 2)
			h1, h2 := bc.c.Host(1), bc.c.Host(2)
			c1, err := h1.AddContainer(bc.ctx)
			if err != nil {
				b.Fatal(err)
			}
			c2, err := h2.AddContainer(bc.ctx)
			if err != nil {
				b.Fatal(err)
			}
			agents := bc.pids
			var raw, overlay, rawRTT, overlayRTT, rawLoaded, overlayLoaded, agentCPU, machineCPU float64
			n := 0
			for b.Loop() {
				bps, rtt := bc.iperf(h1.Namespace, h2.Namespace, h2.IP)
				raw, rawLoaded = raw+bps, rawLoaded+rtt
				before := takeCPU(b, agents)
				bps, rtt = bc.iperf(c1.Namespace, c2.Namespace, c2.IP())
				overlay, overlayLoaded = overlay+bps, overlayLoaded+rtt
				a, m := takeCPU(b, agents).since(before)
				agentCPU, machineCPU = agentCPU+a, machineCPU+m
				// Idle: nothing else runs on the cluster now.
				rawRTT += bc.rtt(h1.Namespace, h2.IP)
				overlayRTT += bc.rtt(c1.Namespace, c2.IP())
				n++
			}
			avg := func(v float64) float64 { return v / float64(n) }
			raw, overlay, rawRTT, overlayRTT = avg(raw), avg(overlay), avg(rawRTT), avg(overlayRTT)
			rawLoaded, overlayLoaded = avg(rawLoaded), avg(overlayLoaded)
			b.ReportMetric(raw/1e9, "raw-Gbit/s")
			b.ReportMetric(overlay/1e9, backend+"-Gbit/s")
			b.ReportMetric(overlay/raw, "ratio")
			b.ReportMetric(rawRTT, "raw-rtt-µs")
			b.ReportMetric(overlayRTT, backend+"-rtt-µs")
			b.ReportMetric(overlayRTT/rawRTT, "rtt-ratio")
			b.ReportMetric(rawLoaded, "raw-load-rtt-µs")
			b.ReportMetric(overlayLoaded, backend+"-load-rtt-µs")
			b.ReportMetric(overlayLoaded/rawLoaded, "load-rtt-ratio")
			b.ReportMetric(avg(agentCPU), "agents-cpu-%")
			b.ReportMetric(avg(machineCPU), "machine-cpu-%")
			b.ReportMetric(maxRSS(b, agents), "agent-rss-MB")
		})
	}
}

// rttPings is how many pings rtt sends, pingInterval apart: 1 s in all, so
// that they fit in an iperf3 run.
const (
	rttPings     = 50
	pingInterval = 20 * time.Millisecond
)

var pingTime = regexp.MustCompile(`time=([0-9.]+) ms`)

// rtt returns the median round-trip time in microseconds of rttPings pings
// from the namespace to dst.
func (bc *benchCluster) rtt(from *cluster.Namespace, dst netip.Addr) float64 {
	bc.b.Helper()
	out, err := from.Exec(bc.ctx, "ping", "-n", "-c", fmt.Sprint(rttPings), "-i", fmt.Sprint(pingInterval.Seconds()), "-W", "1", dst.String())
	if err != nil {
		bc.b.Fatalf("ping %s -> %s: %v: %s", from.Short, dst, err, out)
	}
	var us []float64
	for _, m := range pingTime.FindAllSubmatch(out, -1) {
		v, err := strconv.ParseFloat(string(m[1]), 64)
		if err == nil {
			us = append(us, v*1000)
		}
	}
	if len(us) < rttPings/2 {
		bc.b.Fatalf("ping %s -> %s: %d replies of %d", from.Short, dst, len(us), rttPings)
	}
	slices.Sort(us)
	return us[len(us)/2]
}

// cpuSample is CPU time used so far: by the given processes, and by the
// whole machine (busy and total, all CPUs), in clock ticks.
type cpuSample struct {
	at                 time.Time
	procs, busy, total float64
}

func takeCPU(b *testing.B, pids []int) cpuSample {
	b.Helper()
	s := cpuSample{at: time.Now()}
	for _, pid := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		// Fields after the command's closing parenthesis: state is
		// field 3, utime 14, stime 15.
		f := strings.Fields(string(st[strings.LastIndexByte(string(st), ')')+1:]))
		for _, i := range []int{14 - 3, 15 - 3} {
			v, _ := strconv.ParseFloat(f[i], 64)
			s.procs += v
		}
	}
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatal(err)
	}
	// cpu user nice system idle iowait irq softirq steal …
	f := strings.Fields(strings.SplitN(string(st), "\n", 2)[0])[1:]
	for i, v := range f {
		x, _ := strconv.ParseFloat(v, 64)
		if i >= 8 { // guest time is counted in user already
			break
		}
		s.total += x
		if i != 3 && i != 4 {
			s.busy += x
		}
	}
	return s
}

// maxRSS is the largest resident set of the processes, in MB.
func maxRSS(b *testing.B, pids []int) float64 {
	b.Helper()
	var most float64
	for _, pid := range pids {
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, l := range strings.Split(string(st), "\n") {
			if f := strings.Fields(l); len(f) == 3 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				most = max(most, kb/1024)
			}
		}
	}
	return most
}

// since returns the processes' CPU use, in percent of one CPU, and the
// machine's, in percent of all of them, between earlier and s.
func (s cpuSample) since(earlier cpuSample) (procs, machine float64) {
	const ticksPerSecond = 100 // USER_HZ on every Linux architecture
	secs := s.at.Sub(earlier.at).Seconds()
	procs = (s.procs - earlier.procs) / ticksPerSecond / secs * 100
	if d := s.total - earlier.total; d > 0 {
		machine = (s.busy - earlier.busy) / d * 100
	}
	return procs, machine
}

// BenchmarkJoin: two hosts run agents; each iteration starts the agent of a
// third host and measures until both peers have a route to its subnet, then
// releases its lease (--release-lease) and waits for the routes to go.
// Reported: p50, p99 and max of start → route on every peer.
func BenchmarkJoin(b *testing.B) {
	for _, backend := range joinBackends {
		b.Run(backend, func(b *testing.B) {
			bc := newBenchCluster(b, backend, 3, 2)
			h1, h2, h3 := bc.c.Host(1), bc.c.Host(2), bc.c.Host(3)
			peers := []*cluster.Host{h1, h2}
			var took []time.Duration
			for b.Loop() {
				start := time.Now()
				a, err := h3.StartAgent(bc.ctx)
				if err != nil {
					b.Fatal(err)
				}
				var sn netip.Prefix
				err = cluster.Eventually(bc.ctx, ready, func() error {
					if !sn.IsValid() {
						env, err := subnetenv.Read(h3.SubnetFile())
						if err != nil {
							return err
						}
						sn = env.Subnet.Masked()
					}
					for _, p := range peers {
						if !hasRoute(p, sn) {
							return fmt.Errorf("%s has no route to %s yet", p, sn)
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))

				b.StopTimer()
				if _, err := a.Stop(); err != nil {
					b.Fatal(err)
				}
				rel, err := h3.StartAgent(bc.ctx, "--release-lease")
				if err != nil {
					b.Fatal(err)
				}
				if code, err := rel.Wait(bc.ctx); err != nil || code != 0 {
					b.Fatalf("--release-lease: exit %d, %v", code, err)
				}
				err = cluster.Eventually(bc.ctx, ready, func() error {
					for _, p := range peers {
						if hasRoute(p, sn) {
							return fmt.Errorf("%s still routes %s", p, sn)
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			slices.Sort(took)
			b.ReportMetric(ms(percentile(took, 0.50)), "p50-ms")
			b.ReportMetric(ms(percentile(took, 0.99)), "p99-ms")
			b.ReportMetric(ms(took[len(took)-1]), "max-ms")
		})
	}
}

// hasRoute reports whether the host's main table routes sn (any route
// whose destination is exactly sn).
func hasRoute(h *cluster.Host, sn netip.Prefix) bool {
	routes, err := h.Routes()
	if err != nil {
		return false
	}
	return slices.ContainsFunc(routes, func(r string) bool { return strings.HasPrefix(r, sn.String()+" ") })
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
