package agent

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrapeObserver is the observer of an agent with n vxlan peers after a
// successful pass, with the lease manager's and etcd's series, and its
// health server's mux (/status, /metrics).
func scrapeObserver(n int) (*observer, *http.ServeMux) {
	o := newObserver()
	o.watchEtcd(func() bool { return true })
	o.watchLeases(&subnet.Stats{}, func() int { return 0 })
	o.watchLeaseTTL(func() (time.Duration, bool) { return 20 * time.Second, true })
	own, peers := manyPeers(n)
	o.setOwn(own, "vxlan")
	o.reconciled(own, peers, backend.Result{ByKind: map[string]int{"route": n, "fdb": n, "neighbour": n}}, nil, time.Millisecond)
	return o, metricsMux(o)
}

// heapNode makes up a live heap the garbage collector has to mark.
type heapNode struct {
	next *heapNode
	_    [48]byte
}

// underAgentLimit runs b's loop as the agent runs by default (GOMEMLIMIT
// 24 MiB) with mib MiB of live heap: at 5000 peers an agent's heap is at
// that limit (38.5 MB RSS), so every allocation brings the next garbage
// collection nearer, which marks the whole heap. mib 0 leaves the limit
// alone.
func underAgentLimit(b *testing.B, mib int, loop func()) {
	var live *heapNode
	for range mib << 20 / 64 {
		live = &heapNode{next: live}
	}
	if mib > 0 {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(24 << 20))
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	loop()
	b.StopTimer()
	runtime.KeepAlive(live)
}

func scrape(b *testing.B, h http.Handler, path string) {
	req := httptest.NewRequest("GET", path, nil)
	req.Header.Set("Accept-Encoding", "gzip") // as Prometheus and Go's http.Client ask
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("%s: %d", path, rec.Code)
	}
}

// BenchmarkScrapeMetrics is one client scraping /metrics after another. Its
// cost does not depend on the number of peers (no series is per peer); its
// allocations are what makes it cost a large agent more (underAgentLimit).
func BenchmarkScrapeMetrics(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, mib := range []int{0, 20} {
			b.Run(fmt.Sprintf("peers=%d/heap=%dMiB", n, mib), func(b *testing.B) {
				_, mux := scrapeObserver(n)
				underAgentLimit(b, mib, func() {
					for range b.N {
						scrape(b, mux, "/metrics")
					}
				})
			})
		}
	}
}

// BenchmarkScrapeMetricsConcurrent is 300 clients scraping /metrics at
// once without pause, through promhttp's handler of the observer's
// registry (answer=each: each scrape gathers, encodes and compresses, as before sharedScrapes) and
// through the agent's /metrics (answer=shared).
func BenchmarkScrapeMetricsConcurrent(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		for _, shared := range []bool{false, true} {
			name := map[bool]string{false: "each", true: "shared"}[shared]
			b.Run(fmt.Sprintf("peers=%d/heap=20MiB/answer=%s", n, name), func(b *testing.B) {
				o, mux := scrapeObserver(n)
				h := http.Handler(mux)
				if !shared {
					h = promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{})
				}
				b.SetParallelism((300 + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
				underAgentLimit(b, 20, func() {
					b.RunParallel(func(pb *testing.PB) {
						for pb.Next() {
							scrape(b, h, "/metrics")
						}
					})
				})
			})
		}
	}
}

// BenchmarkScrapeStatus is one client asking /status after another.
func BenchmarkScrapeStatus(b *testing.B) {
	for _, n := range []int{1000, 5000} {
		b.Run(fmt.Sprintf("peers=%d/heap=20MiB", n), func(b *testing.B) {
			_, mux := scrapeObserver(n)
			underAgentLimit(b, 20, func() {
				for range b.N {
					scrape(b, mux, "/status")
				}
			})
		})
	}
}
