package agent

import (
	"bytes"
	"net/http"
	"strings"

	"golang.org/x/sync/singleflight"
)

// sharedScrapes serves /metrics through h, promhttp's handler of the
// observer's registry, once for all the scrapes that come while it
// answers one: they wait for that answer and get a copy of it (status,
// headers, body), instead of each gathering every series, encoding and
// compressing them again. A scrape gathers about 200 kB of garbage
// whatever the number of peers (the process collector's reads of /proc,
// the Go collector's, the registry's), and promhttp's gzip writers, kept
// in a sync.Pool that each garbage collection empties, cost far more
// whenever several scrapes compress at once. Under the default GOMEMLIMIT
// a large agent's heap is at the limit, so that garbage brings on
// collections, each marking the whole heap: at 5000 peers one scrape
// cost 2–5 ms, and 300 clients scraping without pause took both CPUs
// (BenchmarkScrapeMetrics, BenchmarkScrapeMetricsConcurrent). Now they
// cost one answer each time an answer is made.
//
// Only scrapes asking the same thing share an answer: the same Accept and
// Accept-Encoding headers (the format and compression h picks from) and
// the same query (name[] filters the families). A scrape that comes after
// an answer was made gets a new one, even while some client of the last
// one is still being sent it: promhttp's CoalesceGather shares a gather
// until its last client has it, so one client that reads slowly, or
// scrapes that keep overlapping, kept every scrape at old values
// (TestScrapeAfterGatherIsFresh).
type sharedScrapes struct {
	h      http.Handler
	flight singleflight.Group
}

func (s *sharedScrapes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.Join(r.Header.Values("Accept"), "\n") + "\x00" +
		strings.Join(r.Header.Values("Accept-Encoding"), "\n") + "\x00" + r.URL.RawQuery
	v, _, _ := s.flight.Do(key, func() (any, error) {
		a := &scrapeAnswer{header: http.Header{}, code: http.StatusOK}
		s.h.ServeHTTP(a, r)
		return a, nil
	})
	a := v.(*scrapeAnswer)
	for k, vs := range a.header {
		w.Header()[k] = append([]string(nil), vs...)
	}
	w.WriteHeader(a.code)
	w.Write(a.body.Bytes())
}

// scrapeAnswer is h's answer to a scrape, kept to be sent to each scrape
// that waited for it; it is not changed once made.
type scrapeAnswer struct {
	header      http.Header
	code        int
	wroteHeader bool
	body        bytes.Buffer
}

func (a *scrapeAnswer) Header() http.Header { return a.header }

func (a *scrapeAnswer) WriteHeader(code int) {
	if !a.wroteHeader {
		a.code, a.wroteHeader = code, true
	}
}

func (a *scrapeAnswer) Write(p []byte) (int, error) {
	a.wroteHeader = true
	return a.body.Write(p)
}
