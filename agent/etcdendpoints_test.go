package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
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
		status:    func(_ context.Context, ep string) error { return down[ep] },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    func(s []EndpointStatus) { last = s },
	}
	cur := make([]EndpointStatus, len(eps))
	ctx := context.Background()

	c.check(ctx, cur)
	got := logs.get()
	if len(got) != 1 || !strings.Contains(got[0], "etcd endpoint unreachable") ||
		!strings.Contains(got[0], `"endpoint"="http://b:2379"`) || !strings.Contains(got[0], `"reachable"="2 of 3"`) ||
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
		!strings.Contains(got[1], `"endpoint"="http://b:2379"`) || !strings.Contains(got[1], `"reachable"="3 of 3"`) {
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
		status: func(ctx context.Context, ep string) error {
			calls++
			if calls == 3 { // the second round's first request
				cancel()
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		},
		interval: 10 * time.Millisecond,
		log:      funcr.New(func(string, string) {}, funcr.Options{}),
		report:   func(s []EndpointStatus) { reports <- s },
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
