package agent

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

// TestEndpointCheckerNoneServingWording: when no endpoint serves (a
// cluster that lost quorum: the member left answers without a leader, the
// others refuse), a line about one endpoint does not say that the client
// uses the others. Each line said so, with serving="0 of 3" beside it, on
// the namespace cluster with two of three members killed.
func TestEndpointCheckerNoneServingWording(t *testing.T) {
	eps := []string{"http://a:2379", "http://b:2379", "http://c:2379"}
	refused := errors.New("connect: connection refused")
	errs := map[string]error{eps[0]: errNoLeader, eps[1]: refused, eps[2]: refused}
	var logs logLines
	c := errChecker(eps, errs, &logs)
	cur := make([]EndpointStatus, len(eps))
	c.check(context.Background(), cur)
	got := logs.get()
	if len(got) != len(eps) {
		t.Fatalf("logged %q, want a line for each of the %d endpoints", got, len(eps))
	}
	for i, l := range got {
		if strings.Contains(l, "the client uses the others") || !strings.Contains(l, "no other endpoint serves either") ||
			!strings.Contains(l, `"serving"="0 of 3"`) {
			t.Errorf("line %d: %s\nwant it to say that no other endpoint serves either, 0 of 3 serving", i, l)
		}
	}
	if !strings.Contains(got[0], `"msg"="etcd endpoint answers but has no leader;`) {
		t.Errorf("the member without a leader logged %q", got[0])
	}

	// One serves again: a line about another endpoint going down says the
	// client uses the others, as before.
	delete(errs, eps[2])
	c.check(context.Background(), cur)
	errs[eps[2]] = refused
	delete(errs, eps[1])
	c.check(context.Background(), cur)
	got = logs.get()
	last := got[len(got)-1]
	if !strings.Contains(last, `"msg"="etcd endpoint unreachable; the client uses the others`) || !strings.Contains(last, `"serving"="1 of 3"`) {
		t.Errorf("with one endpoint serving, the last line is %q, want it to say the client uses the others, 1 of 3 serving", last)
	}
}

// errChecker is an endpoint checker of eps, a minute apart, whose status
// request to an endpoint fails with errs[ep] (nil: it serves), logging to
// logs and reporting nowhere.
func errChecker(eps []string, errs map[string]error, logs *logLines) *endpointChecker {
	return &endpointChecker{
		endpoints: eps,
		status:    func(_ context.Context, ep string) ([]EtcdAlarm, error) { return nil, errs[ep] },
		interval:  time.Minute,
		log:       funcr.New(logs.add, funcr.Options{}),
		report:    func([]EndpointStatus, []EtcdAlarm, time.Time) {},
	}
}
