package agent

import (
	"context"
	"errors"
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
		report:    func(s []EndpointStatus, _ []EtcdAlarm) { last = s },
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
		report:   func(s []EndpointStatus, _ []EtcdAlarm) { reports <- s },
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
// without it (a round in which none answers changes nothing), and its end
// is logged once.
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
	c := &endpointChecker{
		endpoints: eps,
		status: func(_ context.Context, ep string) ([]EtcdAlarm, error) {
			return answers[ep].alarms, answers[ep].err
		},
		interval: time.Minute,
		log:      funcr.New(logs.add, funcr.Options{}),
		report:   func(s []EndpointStatus, a []EtcdAlarm) { last, lastAlarms = s, a },
	}
	cur := make([]EndpointStatus, len(eps))
	ctx := context.Background()
	wantAlarms := func(when string, want ...EtcdAlarm) {
		t.Helper()
		if !slices.Equal(lastAlarms, want) {
			t.Fatalf("%s: reported alarms %+v, want %+v", when, lastAlarms, want)
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

	c.check(ctx, cur)
	logs.expect(t, 2)
	wantAlarms("second round", nospace1, nospace2)

	answers["http://a:2379"], answers["http://b:2379"] = refused, refused
	c.check(ctx, cur)
	if got := logs.get(); len(got) != 4 || strings.Contains(strings.Join(got, "\n"), "cleared") {
		t.Fatalf("no endpoint answering logged %q, want a and b unreachable, no alarm change", got[2:])
	}
	wantAlarms("no endpoint answering", nospace1, nospace2)

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
	c := &endpointChecker{
		endpoints: eps,
		status:    func(_ context.Context, ep string) ([]EtcdAlarm, error) { return nil, errs[ep] },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    func([]EndpointStatus, []EtcdAlarm) {},
	}
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
// an alarm, and an entry of another form is kept whole.
func TestStatusAlarms(t *testing.T) {
	resp := &clientv3.StatusResponse{Errors: []string{
		"etcdserver: no leader",
		"memberID:10276657743932975437 alarm:NOSPACE",
		"memberID:10276657743932975437  alarm:CORRUPT",
		"memberID:1 alarm:NOSPACE ",
		"something else",
	}}
	want := []EtcdAlarm{
		{Alarm: "NOSPACE", Member: "8e9e05c52164694d"},
		{Alarm: "CORRUPT", Member: "8e9e05c52164694d"},
		{Alarm: "NOSPACE", Member: "1"},
		{Alarm: "something else"},
	}
	if got := statusAlarms(resp); !slices.Equal(got, want) {
		t.Fatalf("statusAlarms = %+v, want %+v", got, want)
	}
}
