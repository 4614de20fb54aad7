package udp

import "github.com/prometheus/client_golang/prometheus"

// The datapath's counters as Prometheus metrics: the Backend is a
// prometheus.Collector, which the agent registers on its /metrics.

var (
	packetsDesc = prometheus.NewDesc("agentd_udp_packets_total",
		"Packets the udp datapath handled, by direction (out: from flannel0 to a peer; in: from a peer into flannel0) and result (forwarded: sent to the peer or written into flannel0; refused: it passed every check but the kernel refused the send or the write; else why it was dropped).",
		[]string{"direction", "result"}, nil)
	sendErrorsDesc = prometheus.NewDesc("agentd_udp_send_errors_total",
		"Datagrams the kernel refused to send to a peer.", nil, nil)
	tunErrorsDesc = prometheus.NewDesc("agentd_udp_tun_write_errors_total",
		"Writes into flannel0 that failed (the device down, say); one write may carry many coalesced packets, each counted in agentd_udp_packets_total{direction=\"in\",result=\"refused\"}.", nil, nil)
	keeperRestartsDesc = prometheus.NewDesc("agentd_udp_keeper_restarts_total",
		"Descriptor keepers started anew because the one holding flannel0's queues and the sockets died while the agent ran.", nil, nil)
	keeperUpDesc = prometheus.NewDesc("agentd_udp_keeper_up",
		"1 while a descriptor keeper holds flannel0's queues and the sockets, so that an agent restart loses no packet; 0 while there is none (its start failed: the agent tries again, at least once a minute, and logs why), and outside the agent's run (before the datapath is prepared, once it stopped).", nil, nil)
	icmpLimitedDesc = prometheus.NewDesc("agentd_udp_icmp_rate_limited_total",
		"ICMP errors (net-unreachable, time-exceeded) not written into flannel0 because of the rate limit; the packets they were about are counted in agentd_udp_packets_total.", nil, nil)
)

var _ prometheus.Collector = (*Backend)(nil)

// Describe implements prometheus.Collector.
func (b *Backend) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- sendErrorsDesc
	ch <- tunErrorsDesc
	ch <- icmpLimitedDesc
	ch <- keeperRestartsDesc
	ch <- keeperUpDesc
}

// Collect implements prometheus.Collector. Every direction and result has a
// series from the start, so rates work from the first scrape.
func (b *Backend) Collect(ch chan<- prometheus.Metric) {
	for v := range numVerdicts {
		for _, d := range []struct {
			name string
			c    uint64
		}{{"out", b.stats.tx[v].Load()}, {"in", b.stats.rx[v].Load()}} {
			ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(d.c), d.name, v.String())
		}
	}
	ch <- prometheus.MustNewConstMetric(sendErrorsDesc, prometheus.CounterValue, float64(b.stats.sendErrors.Load()))
	ch <- prometheus.MustNewConstMetric(tunErrorsDesc, prometheus.CounterValue, float64(b.stats.tunErrors.Load()))
	ch <- prometheus.MustNewConstMetric(icmpLimitedDesc, prometheus.CounterValue, float64(b.stats.icmpLimited.Load()))
	ch <- prometheus.MustNewConstMetric(keeperRestartsDesc, prometheus.CounterValue, float64(b.keeperRestarts.Load()))
	b.mu.Lock()
	w := b.kw
	b.mu.Unlock()
	up := 0.0
	if w != nil && !w.dead.Load() {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(keeperUpDesc, prometheus.GaugeValue, up)
}
