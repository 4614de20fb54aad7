package scale

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// logWindow is how long each log-volume scenario is watched.
const logWindow = 30 * time.Second

// logLines counts the lines of h1's agent log (the "=== … start" markers
// left out).
func (e *env) logLines() int {
	e.b.Helper()
	s, err := e.h.AgentLog()
	if err != nil {
		e.b.Fatal(err)
	}
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if l != "" && !strings.HasPrefix(l, "=== ") {
			n++
		}
	}
	return n
}

// perMinute runs do, which lasts about d, and reports the agent's log lines
// written meanwhile and until settle has passed, per minute of d.
func (e *env) perMinute(name string, d time.Duration, do func()) {
	e.b.Helper()
	n0, t0 := e.logLines(), time.Now()
	do()
	if rest := d - time.Since(t0); rest > 0 {
		time.Sleep(rest) // the rest of the window is the measurement
	}
	n := e.logLines() - n0
	perMin := float64(n) / d.Minutes()
	e.b.Logf("log volume %-28s %5d lines in %v: %7.0f lines/min", name, n, d, perMin)
	e.b.ReportMetric(perMin, name+"-lines/min")
}

// BenchmarkLogVolume measures the agent's log lines per minute at the
// default verbosity (-v=0) on vxlan and udp at N=1000 in the scenarios an
// operator's journal sees: nothing changing, 1000 peers joining at once,
// churn, etcd down and back, invalid lease keys, and another program
// deleting one of our routes (udp: its one route) again and again.
func BenchmarkLogVolume(b *testing.B) {
	for _, be := range []string{"vxlan", "udp"} {
		b.Run(be, func(b *testing.B) { logVolume(b, be) })
	}
}

func logVolume(b *testing.B, backend string) {
	cluster.RequireRoot(b)
	for b.Loop() {
		e := newEnv(b, backend, 0)
		a, err := e.h.StartAgent(e.ctx, "-v=0")
		if err != nil {
			b.Fatal(err)
		}
		e.a = a
		if err := e.h.WaitReady(e.ctx, ready); err != nil {
			b.Fatal(err)
		}
		const n = 1000
		e.perMinute("join-1000-at-once", logWindow, func() {
			if err := e.gen.Populate(e.ctx, n); err != nil {
				b.Fatal(err)
			}
			e.waitPeers(backend, n)
		})
		e.perMinute("steady", logWindow, func() {})
		e.perMinute("churn-10/s", logWindow, func() {
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for i := range int(logWindow/(100*time.Millisecond)) - 5 {
				<-tick.C
				var err error
				if i%2 == 0 {
					_, _, err = e.gen.Join(e.ctx)
				} else {
					_, _, err = e.gen.Leave(e.ctx)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
		e.waitPeers(backend, e.gen.Len())
		e.perMinute("invalid-keys-1000", logWindow, func() { e.putInvalid(1000) })
		e.perMinute("drift-fight-5/s", logWindow, func() { e.deleteRoutes(5, logWindow-2*time.Second) })
		e.perMinute("etcd-down", logWindow, func() {
			if err := e.c.StopEtcd(); err != nil {
				b.Fatal(err)
			}
		})
		e.perMinute("etcd-back", logWindow, func() {
			if err := e.c.StartEtcd(e.ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// waitPeers waits until h1 has programmed n peers: n of our routes, or with
// udp, whose peers are entries of the agent's forwarding table behind one
// route, agentd_peers_programmed at n.
func (e *env) waitPeers(backend string, n int) {
	e.b.Helper()
	err := cluster.Eventually(e.ctx, ready, func() error {
		if backend == "udp" {
			got, err := e.h.Metric(e.ctx, "agentd_peers_programmed")
			if err == nil && got != float64(n) {
				err = fmt.Errorf("%v of %d peers programmed", got, n)
			}
			return err
		}
		if got := e.ourRoutes(); got != n {
			return fmt.Errorf("%d of %d routes", got, n)
		}
		return nil
	})
	if err != nil {
		e.b.Fatal(err)
	}
}

// putInvalid writes n keys under the subnets prefix whose values are not
// lease JSON, 32 at a time.
func (e *env) putInvalid(n int) {
	e.b.Helper()
	cli, err := e.c.EtcdClient()
	if err != nil {
		e.b.Fatal(err)
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			key := fmt.Sprintf("%s/subnets/junk-%d", prefix, i)
			if _, err := cli.Put(e.ctx, key, "not a lease"); err != nil {
				e.b.Error(err)
			}
		})
	}
	wg.Wait()
}

// deleteRoutes deletes one of our routes in h1 rate times a second for d,
// as another program fighting the agent would.
func (e *env) deleteRoutes(rate int, d time.Duration) {
	e.b.Helper()
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for t0 := time.Now(); time.Since(t0) < d; {
		<-tick.C
		err := e.h.WithNetlink(func(nl *netlink.Handle) error {
			rs, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProto, Table: unix.RT_TABLE_MAIN},
				netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
			if err != nil || len(rs) == 0 {
				return err
			}
			return nl.RouteDel(&rs[0])
		})
		if err != nil && !strings.Contains(err.Error(), "no such process") {
			e.b.Fatal(err)
		}
	}
}
