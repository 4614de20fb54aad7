package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/internal/clip"
	"github.com/agentd/agentd/internal/termsafe"
	"github.com/agentd/agentd/subnet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// observer keeps what /status and /metrics report. The reconcile goroutine
// feeds it after every pass; the HTTP handlers read it.
type observer struct {
	reg *prometheus.Registry

	peers        prometheus.Gauge
	programmed   prometheus.Gauge
	skippedPeers prometheus.Gauge
	reconciles   *prometheus.CounterVec
	reconcileDur prometheus.Histogram
	changes      *prometheus.CounterVec
	repairs      *prometheus.CounterVec
	endpointUp   *prometheus.GaugeVec
	etcdAlarm    *prometheus.GaugeVec
	ctDeleted    prometheus.Counter
	ctErrors     prometheus.Counter

	mu      sync.Mutex
	st      Status
	last    leaseSet // the lease set of the last successful pass
	hasLast bool
	// inKernel holds, by lease key (leaseID), the peers the last successful pass
	// programmed (its peers less those it skipped) as they were then;
	// skipped holds the others as they were then, with the reason it gave.
	inKernel map[leaseID]programmedFacts
	skipped  map[leaseID]skippedFacts
	// pass counts the successful passes recorded (record).
	pass uint64
	// found is the backend's findings /status shows (setFound).
	found *backend.Findings
	// etcdUp reports whether the etcd connection is up; nil before the
	// client exists.
	etcdUp func() bool
	// etcdCause is why etcd cannot be reached, as the outage reporter
	// last found it; empty while it has not looked.
	etcdCause string
	// etcdNoLeader: the only etcd endpoint answered the last check without
	// a leader.
	etcdNoLeader bool
	// leasesRefused, when set, is told after each round of endpoint checks
	// why etcd grants no new lease, "" when it does
	// (health.setEtcdRefusesLeases): a lost lease cannot be recreated
	// meanwhile, which the readiness's reason then says.
	leasesRefused func(string)
	// renewalRefused is etcd's refusal to renew our etcd lease and when the
	// lease ends unless that is fixed, until etcd renews it again; while
	// connected, nothing else would show it before the lease is lost.
	renewalRefused string
	// unusable is the number of keys the lease manager skips now; nil
	// before the manager exists.
	unusable func() int
	// forwarding is what the last IPv4 forwarding check read, by
	// interface ("all": net.ipv4.ip_forward); agentd_ipv4_forwarding.
	forwarding map[string]int
	// offloads names the offloads of the backend's device, for a backend
	// that says them (offloadReporter); nil for the others.
	offloads func() string
	// keeper says the udp backend's descriptor keeper (keeperReporter);
	// nil for the other backends.
	keeper func() *UDPKeeper
}

// offloadReporter is a backend with a datapath of its own (udp) that says
// which offloads its device took.
type offloadReporter interface {
	Offloads() string
}

// watchBackend adds what the backend be says of itself to /status: its
// device's offloads and its descriptor keeper, if it says them; nothing
// of the backend before (be nil: it was dropped).
func (o *observer) watchBackend(be backend.Backend) {
	var offloads func() string
	if r, ok := be.(offloadReporter); ok {
		offloads = r.Offloads
	}
	keeper := udpKeeper(be)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.offloads, o.keeper = offloads, keeper
}

func newObserver() *observer {
	o := &observer{
		reg: prometheus.NewRegistry(),
		peers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentd_peers", Help: "Peer leases known (the lease set without our own).",
		}),
		programmed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentd_peers_programmed", Help: "Peers of the lease set now (agentd_peers) that a successful reconcile programmed in the kernel, unchanged since.",
		}),
		skippedPeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "agentd_peers_skipped", Help: "Peers of the lease set now (agentd_peers) that a successful reconcile did not program because of their lease (another backend type, unusable backend data, ...), unchanged since; /status peersSkipped says why.",
		}),
		reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_reconciles_total", Help: "Reconcile passes, by result (ok, error).",
		}, []string{"result"}),
		reconcileDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "agentd_reconcile_duration_seconds",
			Help:    "Time of one reconcile pass (backend and iptables).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10), // 100µs … 26s
		}),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_kernel_changes_total", Help: "Kernel objects added, updated or removed, by kind.",
		}, []string{"kind"}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "agentd_drift_repairs_total",
			Help: "Kernel objects put back although the lease set had not changed (deleted or altered by someone else), by kind; kind iptables counts the checks that put agentd's iptables chains or jumps back although the rules wanted had not changed.",
		}, []string{"kind"}),
		endpointUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentd_etcd_endpoint_up",
			Help: "1 if the etcd endpoint answered the last status request and has a leader, 0 if not (absent with --etcd-endpoint-check-interval 0).",
		}, []string{"endpoint"}),
		etcdAlarm: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "agentd_etcd_alarm",
			Help: "1 while the etcd cluster has the alarm raised (NOSPACE, CORRUPT: etcd refuses writes and new leases; OTHER: an entry of etcd's status agentd does not know), 0 if not, " +
				"as the last etcd endpoint to answer listed it: kept while none answers (/status etcdAlarmsAsOf says since when; absent with --etcd-endpoint-check-interval 0).",
		}, []string{"alarm"}),
		ctDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentd_conntrack_unmasqueraded_deleted_total",
			Help: "Conntrack entries deleted after a write of the masquerade rules (--ip-masq): flows that left the cluster network without masquerade while the rules were missing.",
		}),
		ctErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "agentd_conntrack_unmasqueraded_errors_total",
			Help: "Writes of the masquerade rules after which the conntrack entries of unmasqueraded flows could not be listed or deleted (logged); such flows keep the pod's address while they keep sending.",
		}),
		st: Status{DriftRepairs: map[string]int64{}},
	}
	o.reg.MustRegister(o.peers, o.programmed, o.skippedPeers, o.reconciles, o.reconcileDur, o.changes, o.repairs, o.endpointUp, o.etcdAlarm, o.ctDeleted, o.ctErrors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	o.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentd_netns_claim_held",
		Help: "1 while the agent holds its claim on this network namespace (@agentd-agent), which refuses a second agentd here; " +
			"0 while another process holds it (a process of another user, or another agentd): /status netnsClaimNotHeld says which.",
	}, func() float64 {
		o.mu.Lock()
		defer o.mu.Unlock()
		return b2f(o.st.NetnsClaimNotHeld == "")
	}))
	found := func(name, help string, n func(*Status) int) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			o.mu.Lock()
			defer o.mu.Unlock()
			return float64(n(&o.st))
		})
	}
	o.reg.MustRegister(
		found("agentd_shadowing_routes",
			"Routes of other programs that take part of a peer's subnet, as the last reconcile pass that judged the kernel's routes found them; /status shadowingRoutes lists them.",
			func(st *Status) int { return st.ShadowingRoutesTotal }),
		found("agentd_stray_addresses",
			"Addresses of this host that route another subnet of the cluster network to their interface, as the last reconcile pass that judged the kernel's routes found them; /status strayAddresses lists them.",
			func(st *Status) int { return st.StrayAddressesTotal }),
	)
	o.reg.MustRegister(newIPForwardingGauge(o))
	o.reg.MustRegister(&configPendingGauge{o: o, desc: prometheus.NewDesc("agentd_network_config_pending",
		"1 while the network config key holds something other than the config this agent runs, which its next start would apply instead "+
			"(/status configPending says what): incompatible names the key (of Backend, Network, EnableIPv6 or IPv6Network) that keeps hosts on the old and the new config from all reaching each other "+
			"(restart every host's agentd together), host_can_run is false when an agent started here with it would stop at once "+
			"(the key invalid or deleted, or this host refusing the config: host-gw behind NAT, a Backend.MTU above the interface's); 0 otherwise.",
		[]string{"incompatible", "host_can_run"}, nil)})
	resubscriptions := func(reason string, n func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "agentd_netlink_resubscriptions_total",
			Help: "Netlink event subscriptions of the backend opened again, each followed by a full pass, by why the last one ended: " +
				"overrun (the kernel dropped events a burst of changes left unread), error (anything else).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 { return float64(n()) })
	}
	o.reg.MustRegister(
		resubscriptions("overrun", func() uint64 { n, _ := backend.EventResubscriptions(); return n }),
		resubscriptions("error", func() uint64 { _, n := backend.EventResubscriptions(); return n }),
	)
	// Zero series exist from the start, so rates work from the first scrape.
	for _, r := range []string{"ok", "error"} {
		o.reconciles.WithLabelValues(r)
	}
	for _, k := range []string{"fdb", "neighbour", "route", "device", "address"} {
		o.changes.WithLabelValues(k)
		o.repairs.WithLabelValues(k)
	}
	o.repairs.WithLabelValues(iptablesKind)
	return o
}

// iptablesKind is the kind of drift repair iptablesRepaired counts.
const iptablesKind = "iptables"

// iptablesRepaired counts a check of the iptables rules that had to put our
// chains or jumps back although the rules wanted had not changed: another
// program (a firewall's reload, an iptables-restore of a set saved without
// them) deleted or altered them.
func (o *observer) iptablesRepaired() {
	o.repairs.WithLabelValues(iptablesKind).Inc()
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.DriftRepairs[iptablesKind]++
}

// netnsClaimNotHeld records why the agent goes without its claim on this
// network namespace (netnsclaim.go); empty once it holds it.
func (o *observer) netnsClaimNotHeld(why string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.NetnsClaimNotHeld = why
}

// setUnderlayDown records the external interface while it carries no
// packets; nil once it does.
func (o *observer) setUnderlayDown(d *UnderlayDown) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.UnderlayDown = d
}

// configPending records what the network config key holds against the
// running config; nil once it means the running config again.
func (o *observer) configPending(p *ConfigPending) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.ConfigPending = p
}

// configPendingGauge is agentd_network_config_pending: one series, whose
// labels say what the pending config would do.
type configPendingGauge struct {
	o    *observer
	desc *prometheus.Desc
}

func (g *configPendingGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *configPendingGauge) Collect(ch chan<- prometheus.Metric) {
	g.o.mu.Lock()
	p := g.o.st.ConfigPending
	g.o.mu.Unlock()
	v, incompatible, canRun := 0.0, "", true
	if p != nil {
		v, incompatible = 1, p.Incompatible
		canRun = p.HostCannotRun == "" && p.Invalid == "" && !p.Deleted
	}
	ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v, incompatible, strconv.FormatBool(canRun))
}

// setRenewalRefused records etcd's refusal to renew our etcd lease, and
// when the lease ends unless that is fixed; a nil err clears it. Its
// signature is subnet.ManagerConfig.OnRenewalRefused's.
func (o *observer) setRenewalRefused(err error, expires time.Time) {
	msg := ""
	if err != nil {
		msg = clip.String(fmt.Sprintf("etcd refuses to renew our lease, which ends at %s unless that is fixed (check --etcd-username and its role): %v",
			expires.UTC().Format(time.RFC3339), err))
	}
	o.mu.Lock()
	o.renewalRefused = msg
	o.mu.Unlock()
}

// watchEtcd adds the etcd connection state, as soon as the client exists:
// the start-up waits on etcd (the network config, a free subnet) are when an
// operator asks most whether it answers.
func (o *observer) watchEtcd(up func() bool) {
	o.mu.Lock()
	o.etcdUp = up
	o.mu.Unlock()
	o.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "agentd_etcd_connected", Help: "1 while the connection to etcd is up.",
	}, func() float64 { return b2f(up()) }))
}

// etcdUnreachable records why etcd cannot be reached (nil: it can), for
// etcdError. An outage reported with several endpoints names each one's
// failure; they are joined on one line.
func (o *observer) etcdUnreachable(err error) {
	cause := ""
	if err != nil {
		cause = strings.ReplaceAll(err.Error(), "\n", "; ")
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.etcdCause = cause
}

// watchLeases adds the lease manager's counters, and unusable, the number
// of keys it skips now.
func (o *observer) watchLeases(stats *subnet.Stats, unusable func() int) {
	o.mu.Lock()
	o.unusable = unusable
	o.mu.Unlock()
	counter := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f)
	}
	o.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "agentd_bad_lease_keys",
			Help: "Keys under the subnets prefix skipped now as invalid, and keys beside it that flanneld reads as leases (a key fixed or deleted leaves it).",
		}, func() float64 { return float64(unusable()) }),
		counter("agentd_watch_events_total", "Lease events received from the etcd watch.", func() float64 { return float64(stats.WatchEvents.Load()) }),
		counter("agentd_watch_relists_total", "Full re-reads of the lease set after the watch broke (reconnects, compaction).", func() float64 { return float64(stats.Relists.Load()) }),
		counter("agentd_bad_leases_total", "Keys under the subnets prefix, and beside it where flanneld reads leases, skipped as invalid (once per key and revision).", func() float64 { return float64(stats.BadEntries.Load()) }),
		counter("agentd_own_lease_reacquired_total", "Times our own lease was recreated or restored.", func() float64 { return float64(stats.Reacquired.Load()) }),
	)
}

// endpointsChecked records a round of etcd endpoint checks: each
// endpoint, and the cluster's alarms, listed at asOf when no endpoint
// answered this round (see endpointChecker.report). NOSPACE, CORRUPT and
// OTHER have a series from the first round, so an alert on them needs no
// absent(), and no other series: a cleared alarm's goes back to 0.
func (o *observer) endpointsChecked(eps []EndpointStatus, alarms []EtcdAlarm, asOf time.Time) {
	for _, e := range eps {
		o.endpointUp.WithLabelValues(endpointLabel(e.Endpoint)).Set(b2f(e.Up))
	}
	o.mu.Lock()
	o.alarmsFound(alarms, asOf)
	o.st.EtcdEndpoints = eps
	tell := o.leasesRefused
	o.mu.Unlock()
	tellLeasesRefused(tell, alarms)
}

// endpointAloneChecked records a check of the client's only etcd endpoint
// (eps holds it): its agentd_etcd_endpoint_up, the cluster's alarms, and
// whether it answered without a leader, which etcdError then says. It is
// not listed in etcdEndpoints: its outages are the connection's, which
// etcdConnected and etcdError show.
func (o *observer) endpointAloneChecked(eps []EndpointStatus, alarms []EtcdAlarm, asOf time.Time) {
	o.endpointUp.WithLabelValues(endpointLabel(eps[0].Endpoint)).Set(b2f(eps[0].Up))
	o.mu.Lock()
	o.alarmsFound(alarms, asOf)
	o.etcdNoLeader = eps[0].NoLeader
	tell := o.leasesRefused
	o.mu.Unlock()
	tellLeasesRefused(tell, alarms)
}

// tellLeasesRefused tells tell (observer.leasesRefused, if set) why etcd
// refuses new leases, by the alarms listed: its NOSPACE or CORRUPT alarm
// ("" when neither is raised). Called without o.mu: tell is the health's.
func tellLeasesRefused(tell func(string), alarms []EtcdAlarm) {
	if tell == nil {
		return
	}
	var raised []string
	for _, a := range alarms {
		if slices.Contains(knownAlarms, a.Alarm) && !slices.Contains(raised, a.Alarm) {
			raised = append(raised, a.Alarm)
		}
	}
	why := ""
	switch len(raised) {
	case 0:
	case 1:
		why = "etcd grants no lease while its " + raised[0] + " alarm is raised (etcdAlarms; the agent's log says what mends it)"
	default:
		why = "etcd grants no lease while its " + strings.Join(raised, " and ") + " alarms are raised (etcdAlarms; the agent's log says what mends it)"
	}
	tell(why)
}

// endpointLabel is ep as the endpoint label of agentd_etcd_endpoint_up
// holds it. A label value must be UTF-8 (WithLabelValues panics on one that
// is not), and a socket path, which --etcd-endpoints takes, may hold any
// bytes: each byte that is not UTF-8 is written \xHH, so two paths that
// differ only there keep a series each (strings.ToValidUTF8 would merge them).
func endpointLabel(ep string) string {
	if utf8.ValidString(ep) {
		return ep
	}
	var b strings.Builder
	for i := 0; i < len(ep); {
		r, n := utf8.DecodeRuneInString(ep[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, `\x%02x`, ep[i])
		} else {
			b.WriteString(ep[i : i+n])
		}
		i += n
	}
	return b.String()
}

// alarmsFound sets etcdAlarms, etcdAlarmsAsOf and agentd_etcd_alarm; o.mu
// is held.
func (o *observer) alarmsFound(alarms []EtcdAlarm, asOf time.Time) {
	raised := map[string]bool{}
	for _, a := range alarms {
		raised[a.Alarm] = true
	}
	for _, name := range append(slices.Clone(knownAlarms), otherAlarm) {
		o.etcdAlarm.WithLabelValues(name).Set(b2f(raised[name]))
	}
	o.st.EtcdAlarms, o.st.EtcdAlarmsAsOf = alarms, asOf
}

// watchLeaseTTL exports the time left on our own etcd lease, as left
// reports it; absent while left reports false.
func (o *observer) watchLeaseTTL(left func() (time.Duration, bool)) {
	o.reg.MustRegister(&optionalGauge{
		desc: prometheus.NewDesc("agentd_lease_ttl_remaining_seconds",
			"Time left on our own subnet lease: its TTL at etcd's last keepalive answer less the time since, "+
				"0 once the etcd client gave the lease up (absent for a reservation, which never expires, "+
				"and until etcd has answered a keepalive of the current lease).", nil, nil),
		value: func() (float64, bool) {
			d, ok := left()
			return d.Seconds(), ok
		},
	})
}

// optionalGauge is a gauge whose series is there only while value reports a
// value.
type optionalGauge struct {
	desc  *prometheus.Desc
	value func() (float64, bool)
}

func (g *optionalGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

func (g *optionalGauge) Collect(ch chan<- prometheus.Metric) {
	if v, ok := g.value(); ok {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, v)
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// setMTU records the MTU subnet.env gives containers.
func (o *observer) setMTU(mtu int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.MTU = mtu
}

// setOwn records our lease and backend.
func (o *observer) setOwn(own subnet.Lease, backendType string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.st.Subnet = own.Subnet.String()
	o.st.PublicIP = own.Attrs.PublicIP.String()
	o.st.Backend = backendType
}

// reconciled records one pass. A pass that changed the kernel although the
// lease set is the same as at the last successful pass repaired drift.
//
// The peers programmed are counted among the peers now, so never more than
// those known: after a successful pass, those it did not skip; after a
// failed one, those the last successful pass programmed and that are
// unchanged since. A failed pass may have programmed some of the others,
// but nothing says which, so they are not counted until a pass succeeds.
func (o *observer) reconciled(own subnet.Lease, peers []subnet.Lease, res backend.Result, err error, took time.Duration) {
	o.reconcileDur.Observe(took.Seconds())
	for k, n := range res.ByKind {
		o.changes.WithLabelValues(k).Add(float64(n))
	}
	o.peers.Set(float64(len(peers)))

	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now().UTC()
	o.st.PeersKnown = len(peers)
	o.st.LastResync = now
	o.setFound(res.Found)
	var skipped []SkippedPeer
	if err != nil {
		o.reconciles.WithLabelValues("error").Inc()
		o.st.LastResyncError = resyncError(err)
		n := 0
		for i := range peers {
			id := idOf(&peers[i])
			if in, ok := o.inKernel[id]; ok && in.of(&peers[i]) {
				n++
			} else if s, ok := o.skipped[id]; ok && s.facts.of(&peers[i]) {
				skipped = append(skipped, SkippedPeer{Lease: s.key, Reason: s.reason})
			}
		}
		o.setProgrammed(n)
		o.setSkipped(skipped)
		return
	}
	o.reconciles.WithLabelValues("ok").Inc()
	o.st.LastResyncError = ""
	o.st.LastResyncOK = now
	o.record(peers, res.SkippedLeases)
	for _, s := range o.skipped {
		skipped = append(skipped, SkippedPeer{Lease: s.key, Reason: s.reason})
	}
	o.setProgrammed(len(o.inKernel))
	o.setSkipped(skipped)
	if o.hasLast && o.last.is(own, peers) {
		for k, n := range res.ByKind {
			o.repairs.WithLabelValues(k).Add(float64(n))
			o.st.DriftRepairs[k] += int64(n)
		}
		return
	}
	// The facts of the peers are those record keeps: only our own lease's
	// backend data is copied again.
	o.last = append(o.last[:0], factsOf(&own))
	for i := range peers {
		id := idOf(&peers[i])
		if in, ok := o.inKernel[id]; ok {
			o.last = append(o.last, in.leaseFacts)
		} else {
			o.last = append(o.last, o.skipped[id].facts)
		}
	}
	o.hasLast = true
}

// record sets inKernel and skipped to what a successful pass over peers
// that skipped skips leaves, in place: an entry whose peer is unchanged is
// kept as it is, a new or changed peer's facts are made, and the entries
// of peers gone are deleted. A pass over the lease set of the last one (the
// resync ticker, netlink events, drift repairs) so makes no garbage, and
// one with a peer joined or gone makes that peer's alone, where each pass
// made ten strings per peer and new maps: 2.4 MB at 5000 peers, which under
// the default GOMEMLIMIT cost 17-29 ms of the reconcile goroutine's time
// per pass (BenchmarkReconciledUnchanged, BenchmarkReconciledOneChanged).
func (o *observer) record(peers []subnet.Lease, skips []backend.SkippedLease) {
	if o.inKernel == nil {
		o.inKernel = make(map[leaseID]programmedFacts, len(peers))
		o.skipped = make(map[leaseID]skippedFacts, len(skips))
	}
	o.pass++
	seen := 0 // entries this pass has set
	for i := range peers {
		p := &peers[i]
		id := idOf(p)
		if k, why, skip := skippedBy(skips, p); skip {
			s, ok := o.skipped[id]
			if !ok || s.reason != why || !s.facts.of(p) {
				s = skippedFacts{facts: factsOf(p), key: k, reason: why}
			}
			if s.pass != o.pass {
				s.pass = o.pass
				seen++
			}
			o.skipped[id] = s
			delete(o.inKernel, id)
			continue
		}
		in, ok := o.inKernel[id]
		if !ok || !in.of(p) {
			in = programmedFacts{leaseFacts: factsOf(p)}
		}
		if in.pass != o.pass {
			in.pass = o.pass
			seen++
		}
		o.inKernel[id] = in
		delete(o.skipped, id)
	}
	if len(o.inKernel)+len(o.skipped) > seen {
		maps.DeleteFunc(o.inKernel, func(_ leaseID, in programmedFacts) bool { return in.pass != o.pass })
		maps.DeleteFunc(o.skipped, func(_ leaseID, s skippedFacts) bool { return s.pass != o.pass })
	}
}

// skippedBy is p's entry in skips (sorted by key, as backend.Result's
// SkippedLeases are): its key and the reason. Only a pass that skipped
// some lease needs p's key made.
func skippedBy(skips []backend.SkippedLease, p *subnet.Lease) (key, reason string, ok bool) {
	if len(skips) == 0 {
		return "", "", false
	}
	k := p.Key()
	j, found := slices.BinarySearchFunc(skips, k, func(s backend.SkippedLease, k string) int { return strings.Compare(s.Key, k) })
	if !found {
		return "", "", false
	}
	return k, skips[j].Reason, true
}

// resyncErrorLines is how many lines of a failed pass's error /status
// lastResyncError keeps: a pass joins the failure of every kernel change,
// one line each, so with the external interface down every peer's route
// adds one (400 KB at 5000 peers), in every answer.
const resyncErrorLines = 10

// resyncError is err's text for lastResyncError: its first
// resyncErrorLines lines, each cut to clip.Len bytes, then how many more
// there are.
func resyncError(err error) string {
	lines := strings.Split(err.Error(), "\n")
	kept := lines[:min(len(lines), resyncErrorLines)]
	for i := range kept {
		kept[i] = clip.String(kept[i])
	}
	s := strings.Join(kept, "\n")
	if more := len(lines) - len(kept); more > 0 {
		s += fmt.Sprintf("\n(and %d more)", more)
	}
	return s
}

func (o *observer) setProgrammed(n int) {
	o.st.PeersProgrammed = n
	o.programmed.Set(float64(n))
}

// skippedListed is how many skipped peers /status lists at most: a
// thousand peers of another backend type would otherwise make it a
// thousand entries long.
const skippedListed = 50

// setSkipped sets PeersSkippedTotal, agentd_peers_skipped and
// PeersSkipped, the first skippedListed of skipped by lease key, each
// reason cut to clip.Len bytes: a reason can quote what a peer wrote in its
// lease, which etcd takes up to its value size limit (backend.SkipLog cuts
// them too; a Result made otherwise is held to the same). PeersSkipped is a
// new slice each time, so status can hand it out after o.mu is released.
func (o *observer) setSkipped(skipped []SkippedPeer) {
	slices.SortFunc(skipped, func(a, b SkippedPeer) int { return strings.Compare(a.Lease, b.Lease) })
	o.st.PeersSkippedTotal = len(skipped)
	o.skippedPeers.Set(float64(len(skipped)))
	o.st.PeersSkipped = slices.Clip(skipped[:min(len(skipped), skippedListed)])
	for i := range o.st.PeersSkipped {
		o.st.PeersSkipped[i].Reason = clip.String(o.st.PeersSkipped[i].Reason)
	}
}

// foundListed is how many routes of each kind the backend found (another
// program's in a peer's subnet, a stray address's) /status lists at most:
// a routing daemon's per-pod routes would make it thousands long.
const foundListed = 50

// setFound sets ShadowingRoutes and StrayAddresses, and their totals, to
// f, the backend's findings at a pass, unless the pass did not judge the
// kernel's routes (f nil: the last pass's stay) or f is the last pass's.
// Each text is cut to clip.Len bytes. The lists are new slices each time,
// so status can hand them out after o.mu is released.
func (o *observer) setFound(f *backend.Findings) {
	if f == nil || f == o.found {
		return
	}
	o.found = f
	o.st.ShadowingRoutesTotal, o.st.ShadowingRoutes = len(f.Shadowing), nil
	for _, s := range f.Shadowing[:min(len(f.Shadowing), foundListed)] {
		o.st.ShadowingRoutes = append(o.st.ShadowingRoutes, ShadowingRoute{Route: clip.String(s.Route), PeerSubnet: s.PeerSubnet})
	}
	o.st.StrayAddressesTotal, o.st.StrayAddresses = len(f.Strays), nil
	for _, s := range f.Strays[:min(len(f.Strays), foundListed)] {
		o.st.StrayAddresses = append(o.st.StrayAddresses, StrayAddress{Iface: clip.String(s.Iface), Address: s.Address, Route: s.Route})
	}
}

// status is the snapshot /status serves.
func (o *observer) status(h *health) Status {
	o.mu.Lock()
	st := o.st
	st.DriftRepairs = make(map[string]int64, len(o.st.DriftRepairs))
	for k, n := range o.st.DriftRepairs {
		st.DriftRepairs[k] = n
	}
	up, unusable, cause, noLeader, refused, offloads, keeper := o.etcdUp, o.unusable, o.etcdCause, o.etcdNoLeader, o.renewalRefused, o.offloads, o.keeper
	o.mu.Unlock()
	if offloads != nil {
		st.Offloads = offloads()
	}
	if keeper != nil {
		st.UDPKeeper = keeper()
	}
	st.Ready, st.NotReadyReason = h.ready()
	if up != nil {
		st.EtcdConnected = up()
		switch {
		case st.EtcdConnected && noLeader:
			st.EtcdError = "etcd " + errNoLeader.Error()
		case st.EtcdConnected && refused != "":
			st.EtcdError = refused
		}
		if !st.EtcdConnected {
			st.EtcdError = "connection to etcd is down; reconnecting"
			if cause != "" {
				st.EtcdError += ": " + cause
			}
		}
	} else {
		st.EtcdError = "not connected yet"
	}
	if unusable != nil {
		st.BadLeases = int64(unusable())
	}
	return st
}

// register adds /status and /metrics to the health server's mux. /status
// writes the control and format characters (U+009B, U+202E, U+200B, ...)
// of its strings as \u escapes (termsafe.JSON): they quote what etcd and
// the kernel hold (a config's Backend, an interface's name), and an
// operator reads the answer with curl on a terminal too. encoding/json
// escapes only U+0000 to U+001F, U+2028 and U+2029.
func (o *observer) register(mux *http.ServeMux, h *health) {
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(termsafe.JSONWriter{W: w})
		enc.SetIndent("", "  ")
		enc.Encode(o.status(h))
	})
	mux.Handle("GET /metrics", &sharedScrapes{h: promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{})})
}

// leaseSet is what of a lease set the kernel state depends on.
type leaseSet []leaseFacts

// programmedFacts is a peer a successful pass programmed, as it was then;
// pass is the last pass that found it so (observer.record).
type programmedFacts struct {
	leaseFacts
	pass uint64
}

// skippedFacts is a peer a successful pass skipped, as it was then, its
// lease key, and why; pass is the last pass that found it so.
type skippedFacts struct {
	facts  leaseFacts
	key    string
	reason string
	pass   uint64
}

// leaseID is a lease's key (subnet.MakeSubnetKey) as its prefixes, which
// take no string made per peer and pass to compare.
type leaseID struct{ subnet, subnet6 netip.Prefix }

// idOf is l's leaseID: its IPv6 subnet only if it is valid, as its key.
func idOf(l *subnet.Lease) leaseID {
	id := leaseID{subnet: l.Subnet}
	if l.IPv6Subnet.IsValid() {
		id.subnet6 = l.IPv6Subnet
	}
	return id
}

type leaseFacts struct {
	id          leaseID
	publicIP    netip.Addr
	backendType string
	backendData string
}

// factsOf is what of l the kernel state depends on.
func factsOf(l *subnet.Lease) leaseFacts {
	return leaseFacts{idOf(l), l.Attrs.PublicIP, l.Attrs.BackendType, string(l.Attrs.BackendData)}
}

// of reports whether f is l's facts, without copying l's backend data.
func (f *leaseFacts) of(l *subnet.Lease) bool {
	return f.id == idOf(l) && f.publicIP == l.Attrs.PublicIP && f.backendType == l.Attrs.BackendType &&
		f.backendData == string(l.Attrs.BackendData)
}

// is reports whether s is the lease set of own and peers.
func (s leaseSet) is(own subnet.Lease, peers []subnet.Lease) bool {
	if len(s) != len(peers)+1 || !s[0].of(&own) {
		return false
	}
	for i := range peers {
		if !s[i+1].of(&peers[i]) {
			return false
		}
	}
	return true
}
