package scale

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
)

// serviceAddrsResult is one run of BenchmarkServiceAddrs.
type serviceAddrsResult struct {
	IdleCPUPct  float64 // agent CPU while only the service addresses churn
	IdlePasses  float64 // reconcile passes meanwhile
	churnResult         // then peers join and leave
	ChurnPasses float64 // reconcile passes meanwhile
	PassCPUMS   float64 // agent CPU per pass meanwhile, ms
	RSSMB       float64 // at the end
}

// BenchmarkServiceAddrs runs the agent (vxlan, 100 peers) on h1 as on a
// Kubernetes node whose kube-proxy runs in IPVS mode, with addrs /32
// service addresses on kube-ipvs0 (a veth: the test kernel may lack dummy),
// 50 of them added or deleted each second, and once with none; in each it
// reports the agent's CPU and passes while only the addresses churn
// (they must wake no pass), then the latency of real peer changes (5 joins
// and 5 leaves a second), the agent's CPU and passes meanwhile (and CPU per
// pass: the addresses cost a pass nothing when SegmentReader follows their
// events), and its RSS. The
// last run reports the ratios of its figures to the first's, measured side
// by side in this run.
func BenchmarkServiceAddrs(b *testing.B) {
	cluster.RequireRoot(b)
	const peers, rate, window = 100, 10, 15 * time.Second
	var runs []serviceAddrsResult
	for _, addrs := range []int{0, 20000} {
		b.Run(fmt.Sprintf("vxlan/addrs=%d", addrs), func(b *testing.B) {
			var r serviceAddrsResult
			for b.Loop() {
				e := newEnv(b, "vxlan", peers)
				churn := e.serviceAddrs(addrs, 50)
				e.cold("vxlan", peers)
				stop := churn()
				passes0, err := e.h.Metric(e.ctx, `agentd_reconciles_total{result="ok"}`)
				if err != nil {
					b.Fatal(err)
				}
				cpu0, t0 := cpuSeconds(e.a.Pid()), time.Now()
				time.Sleep(window) // the window is the measurement
				r.IdleCPUPct = (cpuSeconds(e.a.Pid()) - cpu0) / time.Since(t0).Seconds() * 100
				passes1, err := e.h.Metric(e.ctx, `agentd_reconciles_total{result="ok"}`)
				if err != nil {
					b.Fatal(err)
				}
				r.IdlePasses = passes1 - passes0
				r.churnResult = e.churn("vxlan", peers, rate, window)
				passes2, err := e.h.Metric(e.ctx, `agentd_reconciles_total{result="ok"}`)
				if err != nil {
					b.Fatal(err)
				}
				r.ChurnPasses = passes2 - passes1
				r.PassCPUMS = r.CPUPct / 100 * window.Seconds() * 1000 / max(r.ChurnPasses, 1)
				r.RSSMB = rssMB(e.a.Pid())
				stop()
			}
			runs = append(runs, r)
			b.ReportMetric(r.IdleCPUPct, "idle-CPU-%")
			b.ReportMetric(r.IdlePasses, "idle-passes")
			b.ReportMetric(r.JoinP50MS, "join-p50-ms")
			b.ReportMetric(r.JoinP99MS, "join-p99-ms")
			b.ReportMetric(r.CPUPct, "churn-CPU-%")
			b.ReportMetric(r.ChurnPasses, "churn-passes")
			b.ReportMetric(r.PassCPUMS, "CPU-ms/pass")
			b.ReportMetric(r.RSSMB, "RSS-MB")
			if len(runs) == 2 {
				bare := runs[0]
				b.ReportMetric(r.JoinP50MS/bare.JoinP50MS, "join-p50-ratio")
				b.ReportMetric(r.CPUPct/bare.CPUPct, "churn-CPU-ratio")
				b.ReportMetric(r.PassCPUMS/bare.PassCPUMS, "CPU-per-pass-ratio")
				b.ReportMetric(r.RSSMB/bare.RSSMB, "RSS-ratio")
			}
		})
	}
}

// serviceAddrs puts n (at most 24 576) /32s of 198.18.128.0/17 on
// kube-ipvs0 in h1, apart from the real hosts' 198.18.0.0/24 and the
// virtual hosts' 198.19.0.0/16, and returns the func that starts to delete
// one and add one of 198.18.224.0/19 perSec times a second in all, as
// kube-proxy does while Services come and go, until the func it returns is
// called. Nothing is sent to them.
//
// The churn starts once the agent is up: its start lists every address of
// the host (looking for the external interface), and with 20 000 of them
// that dump is marked interrupted by a change during it so often that it
// fails five times in a row, and agentd exits 1.
func (e *env) serviceAddrs(n, perSec int) (churn func() (stop func())) {
	e.b.Helper()
	addr := func(i int) *netlink.Addr {
		a := netip.AddrFrom4([4]byte{198, 18, byte(128 + i>>8), byte(i)})
		if i >= n {
			a = netip.AddrFrom4([4]byte{198, 18, byte(224 + (i-n)>>8&0x1f), byte(i - n)})
		}
		return &netlink.Addr{IPNet: netipToIPNet(netip.PrefixFrom(a, 32))}
	}
	var ipvs netlink.Link = &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}, PeerName: "kube-ipvs0p"}
	err := e.h.WithNetlink(func(nl *netlink.Handle) error {
		if err := nl.LinkAdd(ipvs); err != nil {
			return err
		}
		for i := range n {
			if err := nl.AddrAdd(ipvs, addr(i)); err != nil {
				return fmt.Errorf("add service address %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
	if n == 0 {
		return func() func() { return func() {} }
	}
	return func() func() { return e.churnServiceAddrs(ipvs, addr, n, perSec) }
}

// churnServiceAddrs is serviceAddrs' churn.
func (e *env) churnServiceAddrs(ipvs netlink.Link, addr func(int) *netlink.Addr, n, perSec int) (stop func()) {
	done, stopped := make(chan struct{}), make(chan error, 1)
	go func() {
		tick := time.NewTicker(time.Second / time.Duration(perSec))
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				stopped <- nil
				return
			case <-tick.C:
			}
			// The oldest service goes, a new one comes: n stay.
			err := e.h.WithNetlink(func(nl *netlink.Handle) error {
				if i%2 == 0 {
					return nl.AddrDel(ipvs, addr(i/2))
				}
				return nl.AddrAdd(ipvs, addr(n+i/2))
			})
			if err != nil {
				stopped <- err
				return
			}
		}
	}()
	return func() {
		close(done)
		if err := <-stopped; err != nil {
			e.b.Error(err)
		}
	}
}
