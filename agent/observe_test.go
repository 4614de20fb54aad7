package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr"
)

func lease(sn, pub string) subnet.Lease {
	return subnet.Lease{Subnet: netip.MustParsePrefix(sn),
		Attrs: subnet.LeaseAttrs{PublicIP: netip.MustParseAddr(pub), BackendType: "vxlan"}}
}

// TestObserverCountsDriftRepairs: changes made for a new lease set are not
// repairs; changes made for the same lease set as the last successful pass
// are, by kind; a failed pass neither counts nor moves the reference set.
func TestObserverCountsDriftRepairs(t *testing.T) {
	o := newObserver()
	own := lease("10.244.1.0/24", "198.18.0.1")
	p2, p3 := lease("10.244.2.0/24", "198.18.0.2"), lease("10.244.3.0/24", "198.18.0.3")
	changed := func(kinds map[string]int) backend.Result {
		r := backend.Result{}
		for k, n := range kinds {
			r.Added += n
			r.Count(k, n)
		}
		return r
	}
	o.reconciled(own, []subnet.Lease{p2}, changed(map[string]int{"route": 1, "neighbour": 1, "fdb": 1}), nil, time.Millisecond)
	o.reconciled(own, []subnet.Lease{p2}, backend.Result{}, nil, time.Millisecond)
	o.reconciled(own, []subnet.Lease{p2}, changed(map[string]int{"route": 1}), nil, time.Millisecond)
	o.reconciled(own, []subnet.Lease{p2, p3}, changed(map[string]int{"route": 1}), errors.New("boom"), time.Millisecond)
	o.reconciled(own, []subnet.Lease{p2, p3}, changed(map[string]int{"route": 1, "fdb": 1}), nil, time.Millisecond)
	o.reconciled(own, []subnet.Lease{p2, p3}, changed(map[string]int{"device": 1, "fdb": 2}), nil, time.Millisecond)

	st := o.status(newHealth(logr.Discard()))
	if got := st.DriftRepairs; len(got) != 3 || got["route"] != 1 || got["device"] != 1 || got["fdb"] != 2 {
		t.Errorf("drift repairs %v, want route 1, device 1, fdb 2", got)
	}
	if st.PeersKnown != 2 || st.PeersProgrammed != 2 || st.LastResyncError != "" || st.Ready {
		t.Errorf("status %+v", st)
	}

	mux := http.NewServeMux()
	o.register(mux, newHealth(logr.Discard()))
	get := func(path string) string {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d", path, rec.Code)
		}
		return rec.Body.String()
	}
	body := get("/status")
	var got Status
	if err := json.Unmarshal([]byte(body), &got); err != nil || got.DriftRepairs["fdb"] != 2 || got.NotReadyReason == "" {
		t.Errorf("/status: %v\n%s", err, body)
	}
	metrics := get("/metrics")
	for _, want := range []string{
		`agentd_drift_repairs_total{kind="fdb"} 2`,
		`agentd_drift_repairs_total{kind="route"} 1`,
		`agentd_drift_repairs_total{kind="neighbour"} 0`,
		`agentd_kernel_changes_total{kind="fdb"} 4`,
		`agentd_reconciles_total{result="error"} 1`,
		`agentd_reconciles_total{result="ok"} 5`,
		`agentd_reconcile_duration_seconds_count 6`,
		`agentd_peers 2`,
		`agentd_peers_programmed 2`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for _, reason := range []string{"overrun", "error"} {
		if !regexp.MustCompile(`(?m)^agentd_netlink_resubscriptions_total\{reason="` + reason + `"\} [0-9]+$`).MatchString(metrics) {
			t.Errorf("/metrics lacks agentd_netlink_resubscriptions_total{reason=%q}", reason)
		}
	}
}

// TestLeaseTTLMetric: the lease's time left is exported while it is known,
// and the series is absent otherwise (a reservation, no keepalive answer
// yet), not a value that an alert on a low TTL would take for one.
func TestLeaseTTLMetric(t *testing.T) {
	o := newObserver()
	var (
		left  time.Duration
		known bool
	)
	o.watchLeaseTTL(func() (time.Duration, bool) { return left, known })
	mux := http.NewServeMux()
	o.register(mux, newHealth(logr.Discard()))
	series := func() []string {
		t.Helper()
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if rec.Code != 200 {
			t.Fatalf("GET /metrics: %d", rec.Code)
		}
		var got []string
		for _, l := range strings.Split(rec.Body.String(), "\n") {
			if strings.HasPrefix(l, "agentd_lease_ttl_remaining_seconds") {
				got = append(got, l)
			}
		}
		return got
	}
	if got := series(); len(got) != 0 {
		t.Errorf("unknown: /metrics has %q, want no series", got)
	}
	left, known = 90*time.Second+500*time.Millisecond, true
	if got := series(); len(got) != 1 || got[0] != "agentd_lease_ttl_remaining_seconds 90.5" {
		t.Errorf("90.5 s left: /metrics has %q", got)
	}
	left = 0
	if got := series(); len(got) != 1 || got[0] != "agentd_lease_ttl_remaining_seconds 0" {
		t.Errorf("run out: /metrics has %q", got)
	}
	left, known = 0, false
	if got := series(); len(got) != 0 {
		t.Errorf("unknown again: /metrics has %q, want no series", got)
	}
}

// TestObserverPeersProgrammedAmongKnown: the peers programmed are counted
// among the peers known now, in /status and agentd_peers_programmed alike.
// After a failed pass they are the peers the last successful pass programmed
// and that have not changed since, never the count of a larger set that
// pass had.
func TestObserverPeersProgrammedAmongKnown(t *testing.T) {
	o := newObserver()
	h := newHealth(logr.Discard())
	mux := http.NewServeMux()
	o.register(mux, h)
	own := lease("10.244.1.0/24", "198.18.0.1")
	p2, p3, p4 := lease("10.244.2.0/24", "198.18.0.2"), lease("10.244.3.0/24", "198.18.0.3"), lease("10.244.4.0/24", "198.18.0.4")
	p2moved := lease("10.244.2.0/24", "198.18.0.12")
	hostgw := lease("10.244.5.0/24", "198.18.0.5")
	hostgw.Attrs.BackendType = "host-gw"
	skipped := backend.Result{Skipped: 1, SkippedLeases: []backend.SkippedLease{{Key: hostgw.Key(), Reason: "backend type"}}}
	boom := errors.New("boom")

	var okFrom, okTo time.Time
	for _, step := range []struct {
		name            string
		peers           []subnet.Lease
		res             backend.Result
		err             error
		known, programd int
	}{
		{"programmed, one skipped", []subnet.Lease{p2, p3, hostgw}, skipped, nil, 3, 2},
		{"failed, two gone", []subnet.Lease{p2}, backend.Result{}, boom, 1, 1},
		{"failed, one changed, one new", []subnet.Lease{p2moved, p4}, backend.Result{}, boom, 2, 0},
		{"failed, back as programmed", []subnet.Lease{p2, p3, p4, hostgw}, backend.Result{}, boom, 4, 2},
		{"programmed", []subnet.Lease{p2moved, p4}, backend.Result{}, nil, 2, 2},
		{"failed, the same", []subnet.Lease{p2moved, p4}, backend.Result{}, boom, 2, 2},
	} {
		before := time.Now()
		o.reconciled(own, step.peers, step.res, step.err, time.Millisecond)
		after := time.Now()
		if step.err == nil {
			okFrom, okTo = before, after
		}
		st := o.status(h)
		if st.PeersKnown != step.known || st.PeersProgrammed != step.programd {
			t.Errorf("%s: %d known, %d programmed; want %d, %d", step.name, st.PeersKnown, st.PeersProgrammed, step.known, step.programd)
		}
		if st.LastResync.Before(before) || st.LastResync.After(after) || st.LastResyncOK.Before(okFrom) || st.LastResyncOK.After(okTo) {
			t.Errorf("%s: last resync %v, last successful %v; want it in [%v, %v]", step.name, st.LastResync, st.LastResyncOK, okFrom, okTo)
		}
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for _, want := range []string{fmt.Sprintf("agentd_peers %d\n", step.known), fmt.Sprintf("agentd_peers_programmed %d\n", step.programd)} {
			if !strings.Contains(rec.Body.String(), want) {
				t.Errorf("%s: /metrics lacks %q", step.name, want)
			}
		}
	}
}

// TestObserverPeersSkipped: /status names the peers known but not
// programmed, with the backend's reason, sorted by lease key; the peers
// programmed and those skipped make up the peers known after a successful
// pass. After a failed pass the list is, like the count programmed, the
// last successful pass's for the peers unchanged since: a peer new or
// changed since is in neither. A thousand skipped peers are counted and
// the first 50 listed, each reason cut to a bounded length.
// agentd_peers_skipped is peersSkippedTotal each time, 0 again once none is.
func TestObserverPeersSkipped(t *testing.T) {
	o := newObserver()
	h := newHealth(logr.Discard())
	mux := http.NewServeMux()
	o.register(mux, h)
	metrics := func() string {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	own := lease("10.244.1.0/24", "198.18.0.1")
	p2, p3 := lease("10.244.2.0/24", "198.18.0.2"), lease("10.244.3.0/24", "198.18.0.3")
	far := lease("10.244.4.0/24", "198.19.0.4")
	far2 := lease("10.244.4.0/24", "198.19.0.14")
	udp := lease("10.244.10.0/24", "198.18.0.10")
	udp.Attrs.BackendType = "udp"
	udpWhy := `backend type "udp", not "vxlan"`
	farWhy := "public IP 198.19.0.4 is not on-link: ext0 is attached to [198.18.0.0/24] only"
	res := backend.Result{Skipped: 2, SkippedLeases: []backend.SkippedLease{{Key: udp.Key(), Reason: udpWhy}, {Key: far.Key(), Reason: farWhy}}}
	boom := errors.New("boom")
	for _, step := range []struct {
		name            string
		peers           []subnet.Lease
		res             backend.Result
		err             error
		known, programd int
		skipped         []SkippedPeer
	}{
		{"programmed, two skipped", []subnet.Lease{p2, far, udp}, res, nil, 3, 1,
			[]SkippedPeer{{udp.Key(), udpWhy}, {far.Key(), farWhy}}},
		{"failed, one skipped changed, one new", []subnet.Lease{p2, p3, far2, udp}, backend.Result{}, boom, 4, 1,
			[]SkippedPeer{{udp.Key(), udpWhy}}},
		{"failed, back as skipped", []subnet.Lease{far, udp}, backend.Result{}, boom, 2, 0,
			[]SkippedPeer{{udp.Key(), udpWhy}, {far.Key(), farWhy}}},
		{"programmed, none skipped", []subnet.Lease{p2, p3}, backend.Result{}, nil, 2, 2, nil},
		{"failed, a peer skipped before", []subnet.Lease{p2, udp}, backend.Result{}, boom, 2, 1, nil},
	} {
		o.reconciled(own, step.peers, step.res, step.err, time.Millisecond)
		st := o.status(h)
		if st.PeersKnown != step.known || st.PeersProgrammed != step.programd ||
			st.PeersSkippedTotal != len(step.skipped) || !slices.Equal(st.PeersSkipped, step.skipped) {
			t.Errorf("%s: %d known, %d programmed, %d skipped %q; want %d, %d, %q",
				step.name, st.PeersKnown, st.PeersProgrammed, st.PeersSkippedTotal, st.PeersSkipped, step.known, step.programd, step.skipped)
		}
		if step.err == nil && st.PeersProgrammed+st.PeersSkippedTotal != st.PeersKnown {
			t.Errorf("%s: after a successful pass, %d programmed and %d skipped of %d known", step.name, st.PeersProgrammed, st.PeersSkippedTotal, st.PeersKnown)
		}
		if want := fmt.Sprintf("agentd_peers_skipped %d\n", len(step.skipped)); !strings.Contains(metrics(), want) {
			t.Errorf("%s: /metrics lacks %q", step.name, want)
		}
	}

	// A thousand peers of another backend, one of them with a long
	// BackendType quoted in its reason.
	var peers []subnet.Lease
	res = backend.Result{}
	for i := range 1000 {
		p := lease(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), "198.18.1.1")
		peers = append(peers, p)
		why := "backend type \"udp\", not \"vxlan\""
		if i == 0 {
			why = fmt.Sprintf("backend type %q, not \"vxlan\"", strings.Repeat("é", 100000))
		}
		res.SkippedLeases = append(res.SkippedLeases, backend.SkippedLease{Key: p.Key(), Reason: why})
	}
	slices.SortFunc(res.SkippedLeases, func(a, b backend.SkippedLease) int { return strings.Compare(a.Key, b.Key) })
	res.Skipped = len(res.SkippedLeases)
	o.reconciled(own, peers, res, nil, time.Millisecond)
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/status", nil))
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(metrics(), "agentd_peers_skipped 1000\n") {
		t.Errorf("1000 skipped: /metrics lacks agentd_peers_skipped 1000")
	}
	if st.PeersKnown != 1000 || st.PeersProgrammed != 0 || st.PeersSkippedTotal != 1000 || len(st.PeersSkipped) != 50 {
		t.Fatalf("1000 skipped: %d known, %d programmed, %d skipped, %d listed; want 1000, 0, 1000, 50",
			st.PeersKnown, st.PeersProgrammed, st.PeersSkippedTotal, len(st.PeersSkipped))
	}
	for i, p := range st.PeersSkipped {
		if p.Lease != res.SkippedLeases[i].Key {
			t.Fatalf("listed %d: %s, want %s (the first 50 by key)", i, p.Lease, res.SkippedLeases[i].Key)
		}
		if len(p.Reason) > 300 || !utf8.ValidString(p.Reason) {
			t.Errorf("%s: reason of %d bytes (valid UTF-8: %t), want at most 300", p.Lease, len(p.Reason), utf8.ValidString(p.Reason))
		}
	}
	if r := st.PeersSkipped[0].Reason; !strings.HasSuffix(r, "…") || !strings.HasPrefix(r, `backend type "éé`) {
		t.Errorf("the long reason is listed as %.40q…, want it cut, ending with …", r)
	}
	if n := rec.Body.Len(); n > 16<<10 {
		t.Errorf("/status is %d bytes with 1000 peers skipped", n)
	}
}
