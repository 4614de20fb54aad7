package agent

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// blockingCollector is a collector whose Collect waits for release, so a
// gather can be held in flight; calls counts its Collects.
type blockingCollector struct {
	desc    *prometheus.Desc
	release chan struct{}
	calls   atomic.Int32
}

func (c *blockingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.calls.Add(1)
	<-c.release
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n))
}

func metricsMux(o *observer) *http.ServeMux {
	h := newHealth(logr.Discard())
	h.notify = func(string) (bool, error) { return true, nil }
	mux := h.handler()
	o.register(mux, h)
	return mux
}

// TestConcurrentScrapesShareOneGather: scrapes of /metrics that come while
// an answer is made, asking the same, get a copy of it instead of each
// gathering, encoding and compressing anew; those asking another encoding
// get another answer. Before, every scrape gathered every series itself
// (about 200 kB of garbage each, most of it the process and Go
// collectors'), so 300 clients scraping at once cost the agent 300
// gathers.
func TestConcurrentScrapesShareOneGather(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		o := newObserver()
		c := &blockingCollector{desc: prometheus.NewDesc("agentd_test_gathers", "Gathers.", nil, nil), release: make(chan struct{})}
		o.reg.MustRegister(c)
		mux := metricsMux(o)

		const scrapes = 20 // half of them asking for gzip
		answers := make([]*httptest.ResponseRecorder, scrapes)
		var wg sync.WaitGroup
		for i := range scrapes {
			wg.Go(func() {
				req := httptest.NewRequest("GET", "/metrics", nil)
				if i%2 == 1 {
					req.Header.Set("Accept-Encoding", "gzip")
				}
				answers[i] = httptest.NewRecorder()
				mux.ServeHTTP(answers[i], req)
			})
		}
		// Every scrape has begun and waits: on a gather under way for
		// what it asks, or on its own.
		synctest.Wait()
		if n := c.calls.Load(); n != 2 {
			t.Errorf("%d scrapes made while a gather was under way for each of the two encodings they asked for gathered %d times, want twice", scrapes, n)
		}
		close(c.release)
		wg.Wait()
		byEnc := map[string]string{}
		for i, rec := range answers {
			body, enc := rec.Body.String(), rec.Header().Get("Content-Encoding")
			if i%2 == 1 {
				if enc != "gzip" {
					t.Fatalf("scrape %d asked for gzip, got Content-Encoding %q", i, enc)
				}
				zr, err := gzip.NewReader(rec.Body)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(zr)
				if err != nil {
					t.Fatal(err)
				}
				body = string(b)
			} else if enc != "" {
				t.Fatalf("scrape %d asked for no encoding, got Content-Encoding %q", i, enc)
			}
			if rec.Code != http.StatusOK || !strings.Contains(body, "\nagentd_peers 0\n") || !strings.Contains(body, "\nagentd_test_gathers ") {
				t.Fatalf("scrape %d: %d\n%s", i, rec.Code, body)
			}
			gathered := body[strings.Index(body, "\nagentd_test_gathers "):]
			gathered = gathered[:strings.Index(gathered[1:], "\n")+1]
			if byEnc[enc] == "" {
				byEnc[enc] = gathered
			} else if gathered != byEnc[enc] {
				t.Errorf("scrape %d (Content-Encoding %q) has %q, another scrape of that encoding %q: not one answer", i, enc, gathered, byEnc[enc])
			}
		}
	})
}

// slowReader is a client that has not read its answer yet: Write waits
// for read, after saying on writing that it began.
type slowReader struct {
	*httptest.ResponseRecorder
	writing chan struct{}
	read    chan struct{}
}

func (w slowReader) Write(p []byte) (int, error) {
	select {
	case w.writing <- struct{}{}:
	default:
	}
	<-w.read
	return w.ResponseRecorder.Write(p)
}

// TestScrapeAfterGatherIsFresh: a scrape that comes after a gather ended
// gathers anew, even while a client of that gather has not read its answer
// yet. promhttp's own CoalesceGather option shares a gather until the last
// of its clients is answered, so one client that reads slowly (or a steady
// stream of overlapping scrapes) kept every later scrape at the old values.
func TestScrapeAfterGatherIsFresh(t *testing.T) {
	o := newObserver()
	mux := metricsMux(o)
	slow := slowReader{httptest.NewRecorder(), make(chan struct{}, 1), make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		mux.ServeHTTP(slow, httptest.NewRequest("GET", "/metrics", nil))
	}()
	<-slow.writing
	o.peers.Set(7)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	close(slow.read)
	<-done
	if !strings.Contains(rec.Body.String(), "\nagentd_peers 7\n") {
		t.Errorf("scrape after agentd_peers was set to 7, while an earlier scrape's client had not read its answer, says:\n%s", rec.Body)
	}
	if !strings.Contains(slow.Body.String(), "\nagentd_peers 0\n") {
		t.Errorf("the earlier scrape's answer, gathered before agentd_peers was set, says:\n%s", slow.Body)
	}
}

// TestMetricsAnswerAsPromhttp: /metrics answers as promhttp's handler of
// the observer's registry does, byte for byte, headers too, in each format
// and encoding a scraper may ask for. The Go runtime's and the process's
// series change between two gathers, so both answers are asked for the
// agent's own series (name[]).
func TestMetricsAnswerAsPromhttp(t *testing.T) {
	o := newObserver()
	o.watchEtcd(func() bool { return true })
	o.endpointsChecked([]EndpointStatus{{Endpoint: "https://198.18.0.254:2379", Up: true}}, nil, time.Time{})
	o.peers.Set(5000)
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	q := url.Values{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), "agentd_") {
			q.Add("name[]", mf.GetName())
		}
	}
	if len(q["name[]"]) < 10 {
		t.Fatalf("the observer's registry has %d agentd_ families: %v", len(q["name[]"]), q)
	}
	target := "/metrics?" + q.Encode()
	mux := metricsMux(o)
	direct := promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{})
	for _, accept := range []string{"", "text/plain;version=0.0.4", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited", "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"} {
		for _, enc := range []string{"", "gzip"} {
			t.Run(fmt.Sprintf("accept=%q,encoding=%q", accept, enc), func(t *testing.T) {
				ask := func(h http.Handler) *httptest.ResponseRecorder {
					req := httptest.NewRequest("GET", target, nil)
					if accept != "" {
						req.Header.Set("Accept", accept)
					}
					if enc != "" {
						req.Header.Set("Accept-Encoding", enc)
					}
					rec := httptest.NewRecorder()
					h.ServeHTTP(rec, req)
					return rec
				}
				got, want := ask(mux), ask(direct)
				if got.Code != want.Code || fmt.Sprint(got.Header()) != fmt.Sprint(want.Header()) || !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
					t.Errorf("/metrics answered %d %v:\n%q\npromhttp's handler of the registry %d %v:\n%q", got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
				}
			})
		}
	}
}
