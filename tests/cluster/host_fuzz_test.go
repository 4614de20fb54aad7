package cluster

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// FuzzSubnetEnv: parseSubnetEnv agrees with subnetenv.Parse on every file
// the latter accepts (the keys agentd and flanneld write carry the values
// subnetenv.Parse read), and what it returns, written back, reads the same.
func FuzzSubnetEnv(f *testing.F) {
	for _, s := range []string{
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
		"# c\n export FLANNEL_NETWORK = '10.244.0.0/16'\nFLANNEL_SUBNET=\"10.244.5.1/24\"\nFLANNEL_MTU=1450\r\nFLANNEL_MTU=1400\nX=\n",
		"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPV6_NETWORK=fd00::/56\nFLANNEL_IPV6_SUBNET=fd00:0:0:5::1/64\nAGENTD_HOST_ID=0123456789abcdef0123456789abcdef\n",
		"noequals\n", "=\n", "export export A=1\n", "A=\"x\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		env, err := parseSubnetEnv(b)
		e, perr := subnetenv.Parse(b)
		if perr == nil {
			if err != nil {
				t.Fatalf("subnetenv.Parse(%q) = %+v, but parseSubnetEnv: %v", b, e, err)
			}
			prefix := func(key string, want netip.Prefix) {
				v, ok := env[key]
				if !want.IsValid() {
					if v != "" {
						t.Fatalf("%q: %s=%q, subnetenv.Parse has none", b, key, v)
					}
					return
				}
				if p, err := netip.ParsePrefix(v); !ok || err != nil || p != want {
					t.Fatalf("%q: %s=%q, subnetenv.Parse read %v", b, key, v, want)
				}
			}
			prefix("FLANNEL_NETWORK", e.Network)
			prefix("FLANNEL_SUBNET", e.Subnet)
			prefix("FLANNEL_IPV6_NETWORK", e.IPv6Network)
			prefix("FLANNEL_IPV6_SUBNET", e.IPv6Subnet)
			if mtu, err := strconv.Atoi(env["FLANNEL_MTU"]); err != nil || mtu != e.MTU {
				t.Fatalf("%q: FLANNEL_MTU=%q, subnetenv.Parse read %d", b, env["FLANNEL_MTU"], e.MTU)
			}
			masq := false
			if v := env["FLANNEL_IPMASQ"]; v != "" {
				masq, _ = strconv.ParseBool(v)
			}
			if masq != e.IPMasq {
				t.Fatalf("%q: FLANNEL_IPMASQ=%q, subnetenv.Parse read %v", b, env["FLANNEL_IPMASQ"], e.IPMasq)
			}
			if env["AGENTD_HOST_ID"] != e.HostID {
				t.Fatalf("%q: AGENTD_HOST_ID=%q, subnetenv.Parse read %q", b, env["AGENTD_HOST_ID"], e.HostID)
			}
		}
		if err != nil {
			return
		}
		var out strings.Builder
		for k, v := range env {
			if strings.ContainsAny(k, "=\n") || k != strings.TrimSpace(k) || strings.Contains(v, "\n") {
				t.Fatalf("%q: key %q, value %q", b, k, v)
			}
			fmt.Fprintf(&out, "export %s=\"%s\"\n", k, v)
		}
		again, err := parseSubnetEnv([]byte(out.String()))
		if err != nil || !reflect.DeepEqual(again, env) {
			t.Fatalf("%q read %q; written back as %q it reads %q, %v", b, env, out.String(), again, err)
		}
	})
}

// FuzzMetricValue: a sample written in the text format reads back, for any
// value and a legal name, beside a labelled sample of the same family and
// another family; and whatever metricValue accepts it accepts again, with the
// same value, once the families are written back by expfmt.
func FuzzMetricValue(f *testing.F) {
	f.Add([]byte("# HELP m x\n# TYPE m gauge\nm{a=\"b\"} 2\nm 3\n"), "m", 1.5, uint8(0))
	f.Add([]byte("m 1 1700000000000\n"), "m", math.Inf(-1), uint8(1))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"), "h", math.NaN(), uint8(2))
	f.Add([]byte("m 1\nm 2\n"), "m", 0.0, uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, name string, v float64, typ uint8) {
		same := func(a, b float64) bool {
			return math.Float64bits(a) == math.Float64bits(b) || (math.IsNaN(a) && math.IsNaN(b))
		}
		if got, err := metricValue(body, name); err == nil {
			var out bytes.Buffer
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("metricValue(%q, %q) = %v, but the body does not parse: %v", body, name, got, err)
			}
			for _, mf := range fams {
				if _, err := expfmt.MetricFamilyToText(&out, mf); err != nil {
					t.Fatalf("%q: write back: %v", body, err)
				}
			}
			if again, err := metricValue(out.Bytes(), name); err != nil || !same(again, got) {
				t.Fatalf("metricValue(%q, %q) = %v; written back as %q: %v, %v", body, name, got, out.Bytes(), again, err)
			}
		}

		n := "m_" + strings.Map(func(r rune) rune {
			if r == '_' || r == ':' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
				return r
			}
			return -1
		}, name)
		kind := []string{"gauge", "counter", "untyped"}[typ%3]
		val := strconv.FormatFloat(v, 'g', -1, 64)
		text := fmt.Sprintf("# HELP %[1]s help\n# TYPE %[1]s %[2]s\n%[1]s{x=\"1\"} 7\n%[1]s %[3]s\n# TYPE other gauge\nother 9\n", n, kind, val)
		if got, err := metricValue([]byte(text), n); err != nil || !same(got, v) {
			t.Fatalf("metricValue(%q, %q) = %v, %v; want %v", text, n, got, err, v)
		}
	})
}

// TestMetricValueOfAgentdsExposition: metricValue reads what agentd's
// /metrics handler (client_golang's promhttp, the collectors agentd
// registers) serves to the harness's GET, which sends no Accept header.
func TestMetricValueOfAgentdsExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "agentd_peers_programmed", Help: "h"})
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agentd_reconciles_total", Help: "h"}, []string{"result"})
	hist := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agentd_reconcile_duration_seconds", Help: "h"})
	reg.MustRegister(g, c, hist, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g.Set(3)
	c.WithLabelValues("ok").Add(2)
	hist.Observe(0.5)
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	body := rec.Body.Bytes()
	if v, err := metricValue(body, "agentd_peers_programmed"); err != nil || v != 3 {
		t.Errorf("agentd_peers_programmed = %v, %v; want 3", v, err)
	}
	if v, err := metricValue(body, "go_goroutines"); err != nil || v < 1 {
		t.Errorf("go_goroutines = %v, %v", v, err)
	}
	if v, err := metricValue(body, `agentd_reconciles_total{result="ok"}`); err != nil || v != 2 {
		t.Errorf(`agentd_reconciles_total{result="ok"} = %v, %v; want 2`, v, err)
	}
	for _, name := range []string{"agentd_reconciles_total", `agentd_reconciles_total{result="failed"}`, `agentd_reconciles_total{result=ok}`,
		`agentd_reconciles_total{result="ok"`, "agentd_reconcile_duration_seconds", "agentd_absent"} {
		if v, err := metricValue(body, name); err == nil {
			t.Errorf("%s = %v, want an error (labelled only, no such labels, a bad selector, a histogram, absent)", name, v)
		}
	}
	if _, err := metricValue(append(body[:len(body):len(body)], "}garbage\n"...), "agentd_peers_programmed"); err == nil {
		t.Error("a body that does not parse was read")
	}
}
