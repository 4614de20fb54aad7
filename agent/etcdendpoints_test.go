package agent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEndpointChecker: an endpoint down at the first round is logged once
// with how many answer, stays quiet while it stays down, and its return is
// logged once; the report carries every endpoint with the time it entered
// its state, and endpoints that are up from the start are not logged.
func TestEndpointChecker(t *testing.T) {
	eps := []string{"http://a:2379", "http://b:2379", "http://c:2379"}
	down := map[string]error{"http://b:2379": errors.New("connect: connection refused")}
	var logs logLines
	var last []EndpointStatus
	c := &endpointChecker{
		endpoints: eps,
		status:    func(_ context.Context, ep string) ([]EtcdAlarm, error) { return nil, down[ep] },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    func(s []EndpointStatus, _ []EtcdAlarm, _ time.Time) { last = s },
	}
	cur := make([]EndpointStatus, len(eps))
	ctx := context.Background()

	c.check(ctx, cur)
	got := logs.get()
	if len(got) != 1 || !strings.Contains(got[0], "etcd endpoint unreachable") ||
		!strings.Contains(got[0], `"endpoint"="http://b:2379"`) || !strings.Contains(got[0], `"serving"="2 of 3"`) ||
		!strings.Contains(got[0], "connection refused") {
		t.Fatalf("first round logged %q, want one line for b with 2 of 3 reachable", got)
	}
	if len(last) != 3 || !last[0].Up || last[1].Up || !last[2].Up || last[1].Error != "connect: connection refused" {
		t.Fatalf("first report %+v", last)
	}
	since := last[1].Since

	down["http://b:2379"] = errors.New("connect: no route to host")
	c.check(ctx, cur)
	if got := logs.get(); len(got) != 1 {
		t.Fatalf("a second round with b still down logged again: %q", got[1:])
	}
	if !last[1].Since.Equal(since) || last[1].Error != "connect: no route to host" {
		t.Fatalf("b still down: since %v (was %v), error %q; want the first time and the latest error", last[1].Since, since, last[1].Error)
	}

	delete(down, "http://b:2379")
	c.check(ctx, cur)
	got = logs.get()
	if len(got) != 2 || !strings.Contains(got[1], "etcd endpoint reachable again") ||
		!strings.Contains(got[1], `"endpoint"="http://b:2379"`) || !strings.Contains(got[1], `"serving"="3 of 3"`) {
		t.Fatalf("b back logged %q, want one line", got[1:])
	}
	if !last[1].Up || last[1].Error != "" || !last[1].Since.After(since) {
		t.Fatalf("b back: %+v", last[1])
	}
}

// TestEndpointCheckerStops: run checks at once, returns when ctx is done,
// and a round cut short by the cancel is not reported.
func TestEndpointCheckerStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	reports := make(chan []EndpointStatus, 10)
	calls := 0
	c := &endpointChecker{
		endpoints: []string{"http://a:2379", "http://b:2379"},
		status: func(ctx context.Context, ep string) ([]EtcdAlarm, error) {
			calls++
			if calls == 3 { // the second round's first request
				cancel()
				<-ctx.Done()
				return nil, ctx.Err()
			}
			return nil, nil
		},
		interval: 10 * time.Millisecond,
		log:      funcr.New(func(string, string) {}, funcr.Options{}),
		report:   func(s []EndpointStatus, _ []EtcdAlarm, _ time.Time) { reports <- s },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.run(ctx)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the cancel")
	}
	if len(reports) != 1 {
		t.Fatalf("%d reports, want 1 (the first round; the second was cut short)", len(reports))
	}
	if r := <-reports; len(r) != 2 || !r[0].Up || !r[1].Up {
		t.Fatalf("first report %+v", r)
	}
}

// TestEndpointCheckerAlarms: an etcd alarm leaves the endpoints that list
// it up and is logged once for the cluster, however many members list or
// raised it, with what mends it; it is reported until an endpoint answers
// without it (a round in which none answers changes nothing but says when
// they were last listed), and its end is logged once.
func TestEndpointCheckerAlarms(t *testing.T) {
	eps := []string{"http://a:2379", "http://b:2379", "http://c:2379"}
	nospace1, nospace2 := EtcdAlarm{Alarm: "NOSPACE", Member: "1"}, EtcdAlarm{Alarm: "NOSPACE", Member: "2"}
	type answer struct {
		alarms []EtcdAlarm
		err    error
	}
	refused := answer{err: errors.New("connect: connection refused")}
	answers := map[string]answer{
		"http://a:2379": {alarms: []EtcdAlarm{nospace1, nospace2}},
		"http://b:2379": {alarms: []EtcdAlarm{nospace2, nospace1}},
		"http://c:2379": refused,
	}
	var logs logLines
	var last []EndpointStatus
	var lastAlarms []EtcdAlarm
	var lastAsOf time.Time
	c := &endpointChecker{
		endpoints: eps,
		status: func(_ context.Context, ep string) ([]EtcdAlarm, error) {
			return answers[ep].alarms, answers[ep].err
		},
		interval: time.Minute,
		log:      funcr.New(logs.add, funcr.Options{}),
		report:   func(s []EndpointStatus, a []EtcdAlarm, asOf time.Time) { last, lastAlarms, lastAsOf = s, a, asOf },
	}
	cur := make([]EndpointStatus, len(eps))
	ctx := context.Background()
	wantAlarms := func(when string, want ...EtcdAlarm) {
		t.Helper()
		if !slices.Equal(lastAlarms, want) {
			t.Fatalf("%s: reported alarms %+v, want %+v", when, lastAlarms, want)
		}
		if !lastAsOf.IsZero() {
			t.Fatalf("%s: alarms reported as of %v, want those of the round (zero)", when, lastAsOf)
		}
	}

	c.check(ctx, cur)
	got := logs.get()
	if len(got) != 2 || !strings.Contains(got[0], "etcd endpoint unreachable") {
		t.Fatalf("first round logged %q, want c unreachable and one alarm line", got)
	}
	for _, want := range []string{`ETCD ALARM NOSPACE`, `"members"=["1" "2"]`, "etcdctl compact", "etcdctl defrag", "etcdctl alarm disarm"} {
		if !strings.Contains(got[1], want) {
			t.Errorf("alarm logged as %s\nwant it to contain %s", got[1], want)
		}
	}
	if !last[0].Up || !last[1].Up || last[0].Error != "" {
		t.Fatalf("members with an alarm reported as %+v, want up", last)
	}
	wantAlarms("first round", nospace1, nospace2)

	before := time.Now()
	c.check(ctx, cur)
	after := time.Now()
	logs.expect(t, 2)
	wantAlarms("second round", nospace1, nospace2)

	answers["http://a:2379"], answers["http://b:2379"] = refused, refused
	for range 2 {
		c.check(ctx, cur)
		if got := logs.get(); len(got) != 4 || strings.Contains(strings.Join(got, "\n"), "cleared") {
			t.Fatalf("no endpoint answering logged %q, want a and b unreachable, no alarm change", got[2:])
		}
		if !slices.Equal(lastAlarms, []EtcdAlarm{nospace1, nospace2}) || lastAsOf.Before(before) || lastAsOf.After(after) {
			t.Fatalf("no endpoint answering: alarms %+v as of %v, want NOSPACE as of the second round, between %v and %v",
				lastAlarms, lastAsOf, before, after)
		}
	}

	answers["http://b:2379"] = answer{}
	c.check(ctx, cur)
	got = logs.get()
	if len(got) != 6 || !strings.Contains(got[4], "etcd endpoint reachable again") ||
		!strings.Contains(got[5], `"msg"="etcd alarm cleared" "alarm"="NOSPACE"`) {
		t.Fatalf("b back without the alarm logged %q, want b back and the alarm cleared", got[4:])
	}
	wantAlarms("alarm disarmed")
}

// TestEndpointCheckerLeaderlessWording: a member that answers without a
// leader is not called unreachable, and its return says it has a leader
// again; the count of endpoints is of those that serve requests.
func TestEndpointCheckerLeaderlessWording(t *testing.T) {
	eps := []string{"http://a:2379", "http://b:2379"}
	errs := map[string]error{"http://a:2379": errNoLeader}
	var logs logLines
	c := errChecker(eps, errs, &logs)
	cur := make([]EndpointStatus, len(eps))
	c.check(context.Background(), cur)
	got := logs.get()
	if len(got) != 1 || strings.Contains(got[0], "unreachable") ||
		!strings.Contains(got[0], `"msg"="etcd endpoint answers but has no leader; the client uses the others`) ||
		!strings.Contains(got[0], `"serving"="1 of 2"`) {
		t.Fatalf("a without a leader logged %q, want one line saying it answers without a leader, 1 of 2 serving", got)
	}
	delete(errs, "http://a:2379")
	c.check(context.Background(), cur)
	if got := logs.get(); len(got) != 2 || !strings.Contains(got[1], `"msg"="etcd endpoint has a leader again"`) {
		t.Fatalf("a with a leader again logged %q", got[1:])
	}
}

// TestStatusAlarms: the alarms among a status answer's errors, in the
// forms etcd's protobuf libraries write them (one or two spaces between
// fields, a trailing space), member IDs in hex; the no-leader error is not
// an alarm, and an alarm of another name, or an entry of another form, is
// an OTHER alarm with the entry, cut to maxAlarmEntry bytes.
func TestStatusAlarms(t *testing.T) {
	resp := &clientv3.StatusResponse{Errors: []string{
		"etcdserver: no leader",
		"memberID:10276657743932975437 alarm:NOSPACE",
		"memberID:10276657743932975437  alarm:CORRUPT",
		"memberID:1 alarm:NOSPACE ",
		"something else",
		"memberID:2 alarm:FULLMOON",
		strings.Repeat("x", 300),
	}}
	want := []EtcdAlarm{
		{Alarm: "NOSPACE", Member: "8e9e05c52164694d"},
		{Alarm: "CORRUPT", Member: "8e9e05c52164694d"},
		{Alarm: "NOSPACE", Member: "1"},
		{Alarm: "OTHER", Entry: "something else"},
		{Alarm: "OTHER", Member: "2", Entry: "memberID:2 alarm:FULLMOON"},
		{Alarm: "OTHER", Entry: strings.Repeat("x", maxAlarmEntry)},
	}
	if got := statusAlarms(resp); !slices.Equal(got, want) {
		t.Fatalf("statusAlarms = %+v, want %+v", got, want)
	}
}

// TestAlarmSeriesBounded: entries of etcd's status that are not a known
// alarm, a new text each round, are one OTHER series of agentd_etcd_alarm,
// 1 while any is listed, and each is logged once, the first
// maxOthersLogged of them, then one line that no more are. Each text was
// an alarm name: a series each, never removed, and a log line each time
// it came back.
func TestAlarmSeriesBounded(t *testing.T) {
	var logs logLines
	obs := newObserver()
	var listed []EtcdAlarm
	c := &endpointChecker{
		endpoints: []string{"http://a:2379", "http://b:2379"},
		status:    func(context.Context, string) ([]EtcdAlarm, error) { return listed, nil },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    obs.endpointsChecked,
	}
	cur := make([]EndpointStatus, 2)
	entry := func(i int) string { return fmt.Sprintf("etcdserver: something %d", i) }
	for round := range 3 * maxOthersLogged {
		listed = statusAlarms(&clientv3.StatusResponse{Errors: []string{entry(round), entry(0)}})
		c.check(context.Background(), cur)
		if v := gaugeValue(t, obs, "agentd_etcd_alarm", "alarm", "OTHER"); v != 1 {
			t.Fatalf("round %d: agentd_etcd_alarm{alarm=\"OTHER\"} %v, want 1", round, v)
		}
	}
	listed = nil
	c.check(context.Background(), cur)
	if v := gaugeValue(t, obs, "agentd_etcd_alarm", "alarm", "OTHER"); v != 0 {
		t.Fatalf("no entry listed: agentd_etcd_alarm{alarm=\"OTHER\"} %v, want 0", v)
	}
	got := logs.get()
	if len(got) != maxOthersLogged+1 {
		t.Fatalf("logged %d lines, want %d (each of the first %d entries once, then that no more are):\n%s",
			len(got), maxOthersLogged+1, maxOthersLogged, strings.Join(got, "\n"))
	}
	for i, l := range got[:maxOthersLogged] {
		if !strings.Contains(l, "etcd's status lists an entry agentd does not know") || !strings.Contains(l, `"entry"="`+entry(i)+`"`) {
			t.Fatalf("line %d: %s, want entry %q", i, l, entry(i))
		}
	}
	if !strings.Contains(got[maxOthersLogged], "not logged") {
		t.Fatalf("last line %s, want that no more are logged", got[maxOthersLogged])
	}
	mfs, err := obs.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentd_etcd_alarm" {
			continue
		}
		var labels []string
		for _, m := range mf.GetMetric() {
			labels = append(labels, m.GetLabel()[0].GetValue())
		}
		if slices.Sort(labels); !slices.Equal(labels, []string{"CORRUPT", "NOSPACE", "OTHER"}) {
			t.Fatalf("agentd_etcd_alarm series %q, want CORRUPT, NOSPACE, OTHER", labels)
		}
		return
	}
	t.Fatal("no agentd_etcd_alarm")
}

// TestEndpointCheckerReasonChange: an endpoint that stays down but goes
// from refusing connections to answering without a leader, or back, is
// logged again once the new state held two rounds; one that flips each
// round logs nothing more; its return says what the last line said. The
// change was not logged though /status showed it.
func TestEndpointCheckerReasonChange(t *testing.T) {
	const b = "http://b:2379"
	refused := errors.New("connect: connection refused")
	var logs logLines
	var last []EndpointStatus
	var errB error
	c := &endpointChecker{
		endpoints: []string{"http://a:2379", b},
		status: func(_ context.Context, ep string) ([]EtcdAlarm, error) {
			if ep == b {
				return nil, errB
			}
			return nil, nil
		},
		interval: time.Minute,
		log:      funcr.New(logs.add, funcr.Options{}),
		report:   func(s []EndpointStatus, _ []EtcdAlarm, _ time.Time) { last = s },
	}
	cur := make([]EndpointStatus, 2)
	var since time.Time
	for i, step := range []struct {
		err    error
		logged string // the line the round logs, if any
	}{
		{refused, `"msg"="etcd endpoint unreachable; the client uses the others`},
		{errNoLeader, ""},
		{errNoLeader, `"msg"="etcd endpoint answers now, but has no leader; the client uses the others`},
		{errNoLeader, ""},
		{refused, ""},
		{errNoLeader, ""}, // flips each round: nothing
		{refused, ""},
		{errNoLeader, ""},
		{refused, ""},
		{refused, `"msg"="etcd endpoint no longer answers (it answered without a leader before); the client uses the others`},
		{refused, ""},
		{errNoLeader, ""},
		{nil, `"msg"="etcd endpoint reachable again" "endpoint"="` + b + `"`},
		{errNoLeader, `"msg"="etcd endpoint answers but has no leader; the client uses the others`},
		{refused, ""},
		{nil, `"msg"="etcd endpoint has a leader again" "endpoint"="` + b + `"`},
	} {
		errB = step.err
		n := len(logs.get())
		c.check(context.Background(), cur)
		got := logs.get()[n:]
		if step.logged == "" && len(got) != 0 || step.logged != "" && (len(got) != 1 || !strings.Contains(got[0], step.logged) ||
			!strings.Contains(got[0], `"endpoint"="`+b+`"`)) {
			t.Fatalf("round %d (%v): logged %q, want %q", i, step.err, got, step.logged)
		}
		if i == 0 {
			since = last[1].Since
		}
		s := last[1]
		if step.err != nil && (s.Up || s.Error != step.err.Error() || s.NoLeader != errors.Is(step.err, errNoLeader) ||
			i < 12 && !s.Since.Equal(since)) {
			t.Fatalf("round %d: reported %+v, want down since %v with %v", i, s, since, step.err)
		}
	}
}
