package scale

import (
	"bufio"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/agentd/agentd/agent"
)

// An idle agent's etcd activity, hour by hour. Each periodic source of it
// in the code, with its interval at the defaults:
//
//   - the etcd endpoint check: one Status request per endpoint every
//     --etcd-endpoint-check-interval (agent.DefaultEtcdEndpointCheckInterval,
//     30 s);
//   - the lease keepalive: one LeaseKeepAlive message on the client's
//     stream every TTL/3 (--subnet-lease-ttl, agent.DefaultSubnetLeaseTTL,
//     24 h: every 8 h);
//   - watch progress notifications, which both watches (subnets, config)
//     ask for: sent by etcd every --watch-progress-notify-interval of the
//     server (etcdProgressDefault, 10 min), answered by nothing;
//   - gRPC's HTTP/2 keepalive pings, every 10 s while a stream is open
//     (agent/etcd.go's DialKeepAliveTime, not a flag): no gRPC message, so
//     counted only in the TCP segments etcd receives from the agent;
//   - a compaction: it cancels only watches behind the compacted revision,
//     and an idle agent's are at the head, so it should cost no re-list
//     (one is done halfway through the window to show it).
//
// The resync ticker, the lease lapse check (5 s), the iptables resync and
// the watchdog touch only the kernel and the agent's own state. A window
// of an hour, or of 8 for the keepalive, is not a benchmark: the agent and
// etcd run a shortened, real schedule (the intervals are flags), the
// window covers several periods of each source, and the hourly figure at
// the defaults is computed from the count measured per period of each.
const (
	// idleWindow is how long etcd's counters are read apart.
	idleWindow = 90 * time.Second
	// idleTTL is the agent's --subnet-lease-ttl in the window: a keepalive
	// every 10 s.
	idleTTL = 30 * time.Second
	// idleProgress is etcd's --watch-progress-notify-interval in the window.
	idleProgress = 30 * time.Second
	// etcdProgressDefault is etcd's default --watch-progress-notify-interval.
	etcdProgressDefault = 10 * time.Minute
)

// idleSource is one row of the idle table.
type idleSource struct {
	Name     string
	Count    float64       // measured in idleWindow
	Period   time.Duration // its interval in the window; 0: not periodic, or not known
	Default  time.Duration // its interval at the defaults
	PerHour  float64       // at the defaults
	Measured string        // what was counted
	Unit     string        // its benchmark metric, per hour
	Request  bool          // a request of the agent's, summed in requests/h
}

// idleEtcd starts the agent (vxlan, N peers) on the shortened schedule,
// lets it settle, and counts what etcd receives from it (and sends it
// unasked) over idleWindow, with a compaction halfway through.
func idleEtcd(e *env) []idleSource {
	b := e.b
	b.Helper()
	a, err := e.h.StartAgent(e.ctx, "--subnet-lease-ttl="+idleTTL.String())
	if err != nil {
		b.Fatal(err)
	}
	e.a = a
	if err := e.h.WaitReady(e.ctx, ready); err != nil {
		b.Fatal(err)
	}
	// The start's own requests (acquire, lists, the first check) are
	// done before the window; the agent is the only client left.
	e.gen.Close()
	time.Sleep(5 * time.Second) // the settling is part of the measurement's definition
	recv0, sent0 := e.etcdMessages()
	segs0 := e.segmentsFrom(e.h.IP.String())
	t0 := time.Now()
	time.Sleep(idleWindow / 2) // the measurement window itself
	cli, err := e.c.EtcdClient()
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	resp, err := cli.Get(e.ctx, prefix+"/config")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cli.Compact(e.ctx, resp.Header.Revision); err != nil {
		b.Fatal(err)
	}
	// The Get and Compact are the test's, on a connection from elsewhere:
	// subtracted below.
	time.Sleep(idleWindow - time.Since(t0)) // the rest of the window
	window := time.Since(t0)
	recv1, sent1 := e.etcdMessages()
	segs1 := e.segmentsFrom(e.h.IP.String())
	recv := delta(recv0, recv1)
	recv["Range"]--
	recv["Compact"]--
	sent := delta(sent0, sent1)

	hourly := func(count float64, period, def time.Duration) float64 {
		if period == 0 {
			return count * float64(time.Hour) / float64(window)
		}
		perPeriod := count / (float64(window) / float64(period))
		return perPeriod * float64(time.Hour) / float64(def)
	}
	var rows []idleSource
	add := func(name, measured, unit string, request bool, count float64, period, def time.Duration) {
		rows = append(rows, idleSource{Name: name, Measured: measured, Unit: unit, Request: request, Count: count,
			Period: period, Default: def, PerHour: hourly(count, period, def)})
	}
	add("etcd endpoint check", "Status received", "Status/h", true, recv["Status"],
		agent.DefaultEtcdEndpointCheckInterval, agent.DefaultEtcdEndpointCheckInterval)
	add("lease keepalive", "LeaseKeepAlive received", "LeaseKeepAlive/h", true, recv["LeaseKeepAlive"],
		idleTTL/3, agent.DefaultSubnetLeaseTTL/3)
	add("watch progress notifications (etcd → agent)", "Watch sent", "progress-notifications/h", false, sent["Watch"],
		idleProgress, etcdProgressDefault)
	var others []string
	var other float64
	for m, n := range recv {
		if m != "Status" && m != "LeaseKeepAlive" && n != 0 {
			others = append(others, fmt.Sprintf("%s %.0f", m, n))
			other += n
		}
	}
	sort.Strings(others)
	if len(others) == 0 {
		others = []string{"none"}
	}
	add("anything else (a compaction included)", "other gRPC messages received: "+strings.Join(others, ", "), "other-requests/h", true,
		other, 0, 0)
	// Scaled from the window, so with the shortened schedule's extra
	// keepalives and notifications (and their ACKs): an upper bound.
	add("all TCP, at most (gRPC, HTTP/2 pings every 10 s, ACKs)", "TCP segments etcd received from the agent's host", "TCP-segments/h", false,
		segs1-segs0, 0, 0)
	for _, r := range rows {
		how := "scaled from the window"
		if r.Period != 0 {
			how = fmt.Sprintf("every %v here, %v by default", r.Period, r.Default)
		}
		b.Logf("idle: %s: %s %.0f in %v (%s): %s per hour at the defaults",
			r.Name, r.Measured, r.Count, window.Round(time.Second), how, r.perHour())
	}
	return rows
}

func delta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if dv := v - before[k]; dv != 0 {
			d[k] = dv
		}
	}
	return d
}

var grpcMsgRE = regexp.MustCompile(`(?m)^grpc_server_msg_(received|sent)_total\{[^}]*grpc_method="([^"]+)"[^}]*\} (\S+)$`)

// etcdMessages reads etcd's counts of gRPC messages received and sent, by
// method.
func (e *env) etcdMessages() (recv, sent map[string]float64) {
	e.b.Helper()
	conn, err := e.c.EtcdNamespace().Dial(e.ctx, "tcp", "198.18.0.254:2379")
	if err != nil {
		e.b.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: etcd\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	recv, sent = map[string]float64{}, map[string]float64{}
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if s := grpcMsgRE.FindStringSubmatch(sc.Text()); s != nil {
			v, _ := strconv.ParseFloat(s[3], 64)
			if s[1] == "received" {
				recv[s[2]] += v
			} else {
				sent[s[2]] += v
			}
		}
	}
	if len(recv) == 0 {
		e.b.Fatal("etcd /metrics has no grpc_server_msg_received_total")
	}
	return recv, sent
}

var segsInRE = regexp.MustCompile(`\bsegs_in:(\d+)`)

// segmentsFrom sums the TCP segments etcd's client port has received on
// its connections from addr (ss, in etcd's namespace). A connection closed
// between two reads takes its count with it; the agent's stay open while
// it is idle.
func (e *env) segmentsFrom(addr string) float64 {
	e.b.Helper()
	out, err := e.c.EtcdNamespace().Exec(e.ctx, "ss", "-Htin", "state", "established", "sport", "=", ":2379", "dst", addr)
	if err != nil {
		e.b.Fatal(err)
	}
	var n float64
	for _, m := range segsInRE.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		n += v
	}
	return n
}

// perHour prints PerHour, with the digits a rate below one needs.
func (r idleSource) perHour() string {
	if r.PerHour < 1 {
		return strconv.FormatFloat(r.PerHour, 'f', 3, 64)
	}
	return strconv.FormatFloat(r.PerHour, 'f', 1, 64)
}
