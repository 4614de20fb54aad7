package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/embed"
	"google.golang.org/grpc/connectivity"
)

// TestNewEndpointChecker: the agent checks its etcd endpoints, a single
// one included, unless --etcd-endpoint-check-interval is 0; a single one
// over the client's connection. With one endpoint it checked nothing.
func TestNewEndpointChecker(t *testing.T) {
	for _, tc := range []struct {
		endpoints []string
		interval  time.Duration
		want      string
	}{
		{[]string{"http://198.18.0.254:2379"}, 30 * time.Second, "alone"},
		{[]string{"http://198.18.0.254:2379", "http://198.18.0.253:2379"}, 30 * time.Second, "several"},
		{[]string{"http://198.18.0.254:2379"}, 0, "none"},
		{[]string{"http://198.18.0.254:2379", "http://198.18.0.253:2379"}, 0, "none"},
	} {
		cfg := DefaultConfig()
		cfg.EtcdEndpoints, cfg.EtcdEndpointCheckInterval = tc.endpoints, tc.interval
		got := "none"
		if c := newEndpointChecker(&cfg, &etcdConn{}, logr.Discard(), newObserver()); c != nil {
			got = "several"
			if c.alone {
				got = "alone"
			}
			if c.interval != tc.interval {
				t.Errorf("%d endpoints every %v: checker every %v", len(tc.endpoints), tc.interval, c.interval)
			}
		}
		if got != tc.want {
			t.Errorf("%d endpoints every %v: checker %s, want %s", len(tc.endpoints), tc.interval, got, tc.want)
		}
	}
}

// TestEndpointCheckAloneNOSPACE: with a single etcd endpoint, the most
// common setup, NOSPACE went unreported: the endpoint checker ran only with
// several. Now the single endpoint is checked too, with one Status request
// over the client's own connection (no connection of its own: the test
// counts the TCP sockets to etcd), and the alarm is logged once, shown in
// /status (etcdAlarms) and agentd_etcd_alarm, and its end logged once.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries a one-member etcd with a quota of
// 1 MiB at 127.0.0.1:2379. The checker is the one the agent makes.
func TestEndpointCheckAloneNOSPACE(t *testing.T) {
	inOwnNetns(t, endpointCheckAloneNOSPACEChild)
}

func endpointCheckAloneNOSPACEChild(t *testing.T) {
	loopbackUp(t)
	e, _ := startMember(t, "a", 2379, 2380, "a=http://127.0.0.1:2380", func(c *embed.Config) { c.QuotaBackendBytes = alarmQuota })
	waitReady(t, "etcd", e)
	const ep = "http://127.0.0.1:2379"
	var logs logLines
	c, obs, h, chk := checkedAlone(t, ep, &logs)
	ctx := t.Context()
	cur := make([]EndpointStatus, 1)
	// round checks once and that it made no connection, that etcd is
	// reported up and connected, and returns the alarms /status shows and
	// the NOSPACE series.
	round := func(when string) ([]EtcdAlarm, float64) {
		t.Helper()
		before := socketsTo(t, 2379)
		chk.check(ctx, cur)
		if n := socketsTo(t, 2379); n > before {
			t.Fatalf("%s: %d TCP sockets to etcd after a check, %d before: the check made a connection of its own", when, n, before)
		}
		st := obs.status(h)
		if !st.EtcdConnected || st.EtcdError != "" || len(st.EtcdEndpoints) != 0 {
			t.Fatalf("%s: etcdConnected %v, etcdError %q, etcdEndpoints %+v; want connected, no error, no list",
				when, st.EtcdConnected, st.EtcdError, st.EtcdEndpoints)
		}
		if v := gaugeValue(t, obs, "agentd_etcd_endpoint_up", "endpoint", ep); v != 1 {
			t.Fatalf("%s: agentd_etcd_endpoint_up %v, want 1", when, v)
		}
		return st.EtcdAlarms, gaugeValue(t, obs, "agentd_etcd_alarm", "alarm", "NOSPACE")
	}

	if alarms, v := round("with space"); len(alarms) != 0 || v != 0 {
		t.Fatalf("with space: alarms %+v, agentd_etcd_alarm{alarm=\"NOSPACE\"} %v; want none, 0", alarms, v)
	}
	logs.expect(t, 0)

	fillUntilNoSpace(t, ctx, c.Client)
	if _, err := c.Grant(ctx, 60); !errors.Is(err, rpctypes.ErrNoSpace) {
		t.Fatalf("lease grant with NOSPACE: %v, want %v", err, rpctypes.ErrNoSpace)
	}

	alarms, v := round("full")
	if len(alarms) != 1 || alarms[0].Alarm != "NOSPACE" || alarms[0].Member == "" || v != 1 {
		t.Fatalf("full: alarms %+v, agentd_etcd_alarm{alarm=\"NOSPACE\"} %v; want NOSPACE of the member, 1", alarms, v)
	}
	round("still full")
	got := logs.get()
	if len(got) != 1 || !strings.Contains(got[0], `"msg"="ETCD ALARM NOSPACE: `) ||
		!strings.Contains(got[0], "etcdctl alarm disarm") || !strings.Contains(got[0], `"members"=["`+alarms[0].Member+`"]`) {
		t.Fatalf("logged %q, want one line naming NOSPACE, its member and the fix", got)
	}

	freeSpace(t, ctx, c.Client, []string{ep})
	if alarms, v := round("disarmed"); len(alarms) != 0 || v != 0 {
		t.Fatalf("disarmed: alarms %+v, agentd_etcd_alarm{alarm=\"NOSPACE\"} %v; want none, 0", alarms, v)
	}
	if got := logs.get(); len(got) != 2 || !strings.Contains(got[1], `"msg"="etcd alarm cleared" "alarm"="NOSPACE"`) {
		t.Fatalf("logged %q after the disarm, want one line saying NOSPACE is cleared", got[1:])
	}
}

// TestEndpointCheckAloneNoLeader: with a single etcd endpoint whose member
// has lost its leader, the agent showed etcdConnected true, no etcdError
// and logged nothing: the connection stays up, and requests just fail.
// Now the single endpoint's check reports it: logged once ("etcd has no
// leader"), etcdError while it lasts (etcdConnected stays true: it is),
// agentd_etcd_endpoint_up 0, and its return logged once.
//
// The test runs again as a child in a network namespace of its own
// (runInOwnNetns), whose loopback carries a two-member etcd cluster; the
// agent is given a alone:
//
//	child's namespace, lo 127.0.0.1:
//	  member a  client :2379  peer :2380   the agent's only endpoint
//	  member b  client :2381  peer :2382   stopped: a is left without quorum; started again
func TestEndpointCheckAloneNoLeader(t *testing.T) {
	inOwnNetns(t, endpointCheckAloneNoLeaderChild)
}

func endpointCheckAloneNoLeaderChild(t *testing.T) {
	loopbackUp(t)
	const members = "a=http://127.0.0.1:2380,b=http://127.0.0.1:2382"
	bDir := t.TempDir()
	inBDir := func(c *embed.Config) { c.Dir = bDir }
	a, _ := startMember(t, "a", 2379, 2380, members)
	b, stopB := startMember(t, "b", 2381, 2382, members, inBDir)
	waitReady(t, "etcd cluster", a, b)
	const ep = "http://127.0.0.1:2379"
	var logs logLines
	_, obs, h, chk := checkedAlone(t, ep, &logs)
	ctx := t.Context()
	cur := make([]EndpointStatus, 1)
	// round checks once and returns etcdError and agentd_etcd_endpoint_up;
	// etcd must be reported connected.
	round := func(when string) (string, float64) {
		t.Helper()
		chk.check(ctx, cur)
		st := obs.status(h)
		if !st.EtcdConnected {
			t.Fatalf("%s: etcdConnected false (%s), want true", when, st.EtcdError)
		}
		return st.EtcdError, gaugeValue(t, obs, "agentd_etcd_endpoint_up", "endpoint", ep)
	}
	if e, v := round("with a leader"); e != "" || v != 1 {
		t.Fatalf("with a leader: etcdError %q, agentd_etcd_endpoint_up %v; want none, 1", e, v)
	}
	logs.expect(t, 0)

	stopB()
	// a answers without a leader once its election timeout has passed.
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if e, _ := round("b stopped"); !strings.Contains(e, "no leader") {
			return fmt.Errorf("etcdError %q", e)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("b stopped: %v; want etcdError to say etcd has no leader", err)
	}
	e, v := round("still no leader")
	if e != "etcd "+errNoLeader.Error() || v != 0 {
		t.Fatalf("no leader: etcdError %q, agentd_etcd_endpoint_up %v; want %q, 0", e, v, "etcd "+errNoLeader.Error())
	}
	t.Logf("etcdError: %s", e)
	got := logs.get()
	if len(got) != 1 || !strings.Contains(got[0], `"msg"="etcd has no leader; `) || !strings.Contains(got[0], `"endpoint"="`+ep+`"`) ||
		!strings.Contains(got[0], "cluster lost quorum") {
		t.Fatalf("logged %q, want one line saying etcd has no leader", got)
	}

	b, _ = startMember(t, "b", 2381, 2382, members, inBDir)
	waitReady(t, "b, started again,", b)
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		if e, v := round("b back"); e != "" || v != 1 {
			return fmt.Errorf("etcdError %q, agentd_etcd_endpoint_up %v", e, v)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("b back: %v; want no error, 1", err)
	}
	if got := logs.get(); len(got) != 2 || !strings.Contains(got[1], `"msg"="etcd has a leader again" "endpoint"="`+ep+`" "leaderlessFor"=`) {
		t.Fatalf("logged %q, want a second line saying etcd has a leader again", got)
	}
}

// checkedAlone connects to ep, the agent's single etcd endpoint, as the
// agent does, and returns the client (closed when the test ends), an
// observer watching its connection, the health /status reports with, and
// the endpoint checker the agent makes, which logs to logs.
func checkedAlone(t *testing.T, ep string, logs *logLines) (*etcdConn, *observer, *health, *endpointChecker) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{ep}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Get(t.Context(), "/"); err != nil {
		t.Fatal(err)
	}
	obs := newObserver()
	obs.watchEtcd(func() bool { return c.ActiveConnection().GetState() == connectivity.Ready })
	chk := newEndpointChecker(&cfg, c, funcr.New(logs.add, funcr.Options{}), obs)
	if chk == nil {
		t.Fatal("no endpoint checker for a single endpoint")
	}
	return c, obs, newHealth(logr.Discard()), chk
}

// socketsTo counts the TCP sockets of this network namespace, in any state
// (TIME_WAIT included), whose remote end is 127.0.0.1:port: the
// connections made to it, open or recently closed.
func socketsTo(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	remote := fmt.Sprintf("0100007F:%04X", port)
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == remote {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestEndpointCheckAloneStates: the single endpoint's check through a
// sequence of answers. A round without an answer (the connection is down,
// which reportOutages logs) logs nothing, keeps the alarms last found,
// with etcdAlarmsAsOf saying when (they may have been cleared since; they
// were shown as current), reports the endpoint down and no leaderless
// etcd; whether etcd has a
// leader is known again at the next answer, so a leader lost before an
// outage and found after it is logged once each way.
func TestEndpointCheckAloneStates(t *testing.T) {
	const ep = "http://198.18.0.254:2379"
	nospace := []EtcdAlarm{{Alarm: "NOSPACE", Member: "1"}}
	down := errors.New("status request: context deadline exceeded")
	var logs logLines
	obs := newObserver()
	h := newHealth(logr.Discard())
	obs.watchEtcd(func() bool { return true })
	var listed []EtcdAlarm
	var answer error
	c := &endpointChecker{
		endpoints: []string{ep},
		alone:     true,
		status:    func(context.Context, string) ([]EtcdAlarm, error) { return listed, answer },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    obs.endpointAloneChecked,
	}
	cur := make([]EndpointStatus, 1)
	for _, step := range []struct {
		name     string
		listed   []EtcdAlarm
		answer   error
		logged   string // the line this round logs, if any
		noLeader bool   // etcdError says so
		up       float64
		alarms   int
		stale    bool // the alarms are as of the last answer
	}{
		{"up", nil, nil, "", false, 1, 0, false},
		{"no leader", nospace, errNoLeader, `"msg"="etcd has no leader; lease changes wait`, true, 0, 1, false},
		{"still no leader", nospace, errNoLeader, "", true, 0, 1, false},
		{"no answer", nil, down, "", false, 0, 1, true},
		{"a leader", nil, nil, `"msg"="etcd has a leader again" "endpoint"="` + ep + `"`, false, 1, 0, false},
		{"no answer again", nil, down, "", false, 0, 0, true},
		{"up again", nil, nil, "", false, 1, 0, false},
	} {
		listed, answer = step.listed, step.answer
		n := len(logs.get())
		answered := time.Now()
		c.check(context.Background(), cur)
		got := logs.get()[n:]
		var lines []string
		for _, l := range got {
			if !strings.Contains(l, "ETCD ALARM") && !strings.Contains(l, "etcd alarm cleared") {
				lines = append(lines, l)
			}
		}
		if step.logged == "" && len(lines) != 0 || step.logged != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.logged)) {
			t.Fatalf("%s: logged %q, want %q", step.name, lines, step.logged)
		}
		st := obs.status(h)
		if strings.Contains(st.EtcdError, "no leader") != step.noLeader || !step.noLeader && st.EtcdError != "" {
			t.Fatalf("%s: etcdError %q", step.name, st.EtcdError)
		}
		if len(st.EtcdAlarms) != step.alarms || len(st.EtcdEndpoints) != 0 {
			t.Fatalf("%s: etcdAlarms %+v, etcdEndpoints %+v; want %d alarms, no endpoints", step.name, st.EtcdAlarms, st.EtcdEndpoints, step.alarms)
		}
		if v := gaugeValue(t, obs, "agentd_etcd_endpoint_up", "endpoint", ep); v != step.up {
			t.Fatalf("%s: agentd_etcd_endpoint_up %v, want %v", step.name, v, step.up)
		}
		if v := gaugeValue(t, obs, "agentd_etcd_alarm", "alarm", "NOSPACE"); v != float64(step.alarms) {
			t.Fatalf("%s: agentd_etcd_alarm{alarm=\"NOSPACE\"} %v, want %v", step.name, v, step.alarms)
		}
		if step.stale != !st.EtcdAlarmsAsOf.IsZero() || step.stale && !st.EtcdAlarmsAsOf.Before(answered) {
			t.Fatalf("%s: etcdAlarmsAsOf %v, want it set (to the last answer's time, before %v): %v", step.name, st.EtcdAlarmsAsOf, answered, step.stale)
		}
	}
	if got := logs.get(); len(got) != 4 {
		t.Fatalf("logged %q, want 4 lines: no leader, the alarm, its end, a leader again", got)
	}
}

// TestRunChecksSingleEndpoint: the agent run whole with one etcd endpoint,
// the default setup, checks it every --etcd-endpoint-check-interval:
// etcd counts its Status requests, and /metrics has
// agentd_etcd_endpoint_up and the agentd_etcd_alarm series. It ran no check
// with one endpoint, so none of them.
func TestRunChecksSingleEndpoint(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, runAloneChild)
}

func runAloneChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.EtcdEndpointCheckInterval = time.Second
	ctx, stop := startRun(t, cfg, testr.New(t))
	defer stop()
	statuses := func() int {
		t.Helper()
		_, body, err := httpGet(etcd + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		if m := etcdStarted("Status").FindSubmatch(body); m != nil {
			n, _ = strconv.Atoi(string(m[1]))
		}
		return n
	}
	before := statuses()
	want := []string{
		fmt.Sprintf("agentd_etcd_endpoint_up{endpoint=%q} 1\n", etcd),
		`agentd_etcd_alarm{alarm="NOSPACE"} 0` + "\n",
		`agentd_etcd_alarm{alarm="CORRUPT"} 0` + "\n",
	}
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		_, body, err := httpGet("http://" + cfg.HealthzAddr + "/metrics")
		if err != nil {
			return err
		}
		for _, w := range want {
			if !strings.Contains(string(body), w) {
				return fmt.Errorf("/metrics lacks %s", w)
			}
		}
		n := statuses() - before
		if n < 3 {
			return fmt.Errorf("etcd got %d Status requests", n)
		}
		t.Logf("etcd got %d Status requests", n)
		return nil
	})
	if err != nil {
		t.Fatalf("agent with one etcd endpoint, checked every second: %v", err)
	}
}
