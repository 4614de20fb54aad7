package agent

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestRetryLogsAlternatingCausesOnce: a start-up request whose cause
// alternates from one attempt to the next (an etcd host that is down is
// "no route to host" when the neighbour lookup has failed and "i/o timeout"
// while it is still under way, so each attempt finds one or the other)
// logs each cause once until the request succeeds, and /readyz (report)
// follows the current cause. retry logged every change, so such a cause
// came back in the log at every attempt, about three times a minute for as
// long as etcd was away.
func TestRetryLogsAlternatingCausesOnce(t *testing.T) {
	causes := []error{
		errors.New("http://198.18.0.253:2379: connect: dial tcp 198.18.0.253:2379: connect: no route to host"),
		errors.New("http://198.18.0.253:2379: connect: dial tcp 198.18.0.253:2379: i/o timeout"),
	}
	const failures = 3 // no route, timeout, no route; then an answer
	var mu sync.Mutex
	var lines, reports []string
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	attempts := 0
	v, err := retry(t.Context(), log, explained{}, "read the network config", func(_ string, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			reports = append(reports, "cleared")
			return
		}
		reports = append(reports, err.Error())
	}, nil, func(context.Context) (int, error) {
		attempts++
		if attempts > failures {
			return attempts, nil
		}
		return 0, causes[(attempts-1)%len(causes)]
	})
	if err != nil || v != failures+1 {
		t.Fatalf("retry: %v, %v; want attempt %d's answer", v, err, failures+1)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("logged:\n%s", strings.Join(lines, "\n"))
	var retrying int
	for _, l := range lines {
		if strings.Contains(l, "; retrying\"") {
			retrying++
		}
	}
	if retrying != len(causes) {
		t.Errorf("%d attempts failing with %d causes in turn logged %d lines saying it retries; want one per cause", failures, len(causes), retrying)
	}
	if last := lines[len(lines)-1]; !strings.Contains(last, "succeeded after retrying") || !strings.Contains(last, `"attempts"=4`) {
		t.Errorf("last line %s; want it to say the request succeeded at attempt 4", last)
	}
	want := []string{causes[0].Error(), causes[1].Error(), causes[0].Error(), "cleared"}
	if strings.Join(reports, "\n") != strings.Join(want, "\n") {
		t.Errorf("reported %q; want each change of cause, then its end: %q", reports, want)
	}
}

// TestRetryLogLineBounded: a cause that quotes what etcd holds (an invalid
// network config's error quotes its value, up to etcd's 1.5 MB) is logged
// cut to maxReasonLen, as /readyz says it, while report gets it whole and
// the log line keeps its start. Before 2026-12-06 a 6 kB Network made an
// 18 kB journal line at every change of cause (helper 249).
func TestRetryLogLineBounded(t *testing.T) {
	cause := errors.New(`config: "Network": "` + strings.Repeat("9", 1<<20) + `" is not an IPv4 CIDR`)
	var lines, reports []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	attempts := 0
	_, err := retry(t.Context(), log, explained{}, "read the network config", func(_ string, err error) {
		if err != nil {
			reports = append(reports, err.Error())
		}
	}, nil, func(context.Context) (int, error) {
		attempts++
		if attempts > 1 {
			return 1, nil
		}
		return 0, cause
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 2 || !strings.Contains(lines[0], "cannot read the network config; retrying") {
		t.Fatalf("logged %d lines, want the failure and the success", len(lines))
	}
	if n := len(lines[0]); n > maxReasonLen+200 || !strings.Contains(lines[0], `config: \"Network\": \"999`) || !strings.Contains(lines[0], "…") {
		t.Errorf("the failure's line is %d bytes (want at most %d and the cause's start, cut): %.300s", n, maxReasonLen+200, lines[0])
	}
	if len(reports) != 1 || reports[0] != cause.Error() {
		t.Errorf("report got %d causes, want the cause whole", len(reports))
	}
}
