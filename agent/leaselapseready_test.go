package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestNotReadyOnceLeaseTTLPassed: an agent stopped (SIGSTOP) or asleep past
// its lease's TTL answers /readyz as soon as it runs again, before its
// timers have fired and the lease manager has asked etcd about the lease;
// by then etcd may have dropped the lease and another host taken the
// subnet. The clock the lease is judged by (boottime, moved by the test
// here) has run on meanwhile; Go's timers have not fired yet (here: a TTL
// of an hour, no keepalive due).
//
// Short of the TTL, the agent stays ready. Once the TTL has passed with no
// keepalive answered since, /readyz is 503 and it and /status say why,
// from the first request, before the lease manager has looked; once etcd
// renews the lease (the manager's look at the clock, within 5 s), the
// agent is ready again, with no OWN LEASE LOST. Before, /readyz was 200
// until the lease manager reported the lease lost (on the namespace
// cluster, one 200 a few ms after SIGCONT).
func TestNotReadyOnceLeaseTTLPassed(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, leaseLapseChild)
}

func leaseLapseChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	cfg.SubnetLeaseTTL = time.Hour
	logs := &logLines{}
	log := childLogger(t, logs)
	var slept atomic.Int64 // time.Duration the process was stopped
	a := newFakeAgent(cfg, log)
	a.leaseClock = func() time.Time { return boottime.Now().Add(time.Duration(slept.Load())) }

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	defer runChildAgent(t, ctx, a)()
	url := "http://" + cfg.HealthzAddr
	// Ready, and etcd has answered a keepalive of the lease: before that
	// nothing is known of its time left.
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		if err := a.readyErr(); err != nil {
			return err
		}
		_, body, err := httpGet(url + "/metrics")
		if err == nil && leaseTTLMetric.FindSubmatch(body) == nil {
			err = errors.New("no keepalive of the lease answered yet")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// readiness is what the agent answers now: directly, on /readyz, in
	// /status.
	type readiness struct {
		ready      bool
		why        string
		code       int
		body       string
		status     bool
		statusWhy  string
		requestErr error
	}
	now := func() readiness {
		var r readiness
		r.ready, r.why = a.health.ready()
		var b []byte
		r.code, b, r.requestErr = httpGet(url + "/readyz")
		r.body = string(b)
		st := a.obs.status(a.health)
		r.status, r.statusWhy = st.Ready, st.NotReadyReason
		return r
	}

	slept.Store(int64(cfg.SubnetLeaseTTL - time.Minute))
	if r := now(); !r.ready || r.code != http.StatusOK || !r.status {
		t.Fatalf("a minute short of the TTL: %+v; want ready", r)
	}

	// The lease manager looks at the clock every 5 s, and asks etcd once
	// the lease's expiry has passed by it: if it did so between the jump
	// and the checks, etcd's renewal made the agent ready again, rightly.
	// Three such looks in a row, each within a few ms of a jump, do not
	// happen.
	var r readiness
	for attempt := int64(1); attempt <= 3; attempt++ {
		slept.Store(2 * attempt * int64(cfg.SubnetLeaseTTL))
		r = now()
		if !r.ready {
			break
		}
		t.Logf("jump %d: ready (%+v): the lease manager's look came first?", attempt, r)
		if err := cluster.Eventually(ctx, 15*time.Second, func() error { return ranOutRenewed(logs, attempt) }); err != nil {
			t.Fatalf("past the TTL with no keepalive answered: ready, and no renewal by etcd made it so (%v): %+v", err, r)
		}
	}
	if r.ready || r.why != leaseRanOut || r.code != http.StatusServiceUnavailable || r.body != "not ok: "+leaseRanOut+"\n" ||
		r.status || r.statusWhy != leaseRanOut {
		t.Fatalf("past the TTL with no keepalive answered: %+v; want not ready: %q", r, leaseRanOut)
	}

	err = cluster.Eventually(ctx, 15*time.Second, func() error {
		if err := a.readyErr(); err != nil {
			return err
		}
		if code, body, err := httpGet(url + "/readyz"); err != nil || code != http.StatusOK {
			return fmt.Errorf("/readyz: %d %s %v", code, body, err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("not ready again once etcd could renew the lease: %v", err)
	}
	if err := ranOutRenewed(logs, 1); err != nil {
		t.Errorf("ready again: %v", err)
	}
	for _, l := range logs.get() {
		if strings.Contains(l, "OWN LEASE LOST") {
			t.Errorf("logged %s; want the lease kept, etcd renewing it", l)
		}
	}
}

// ranOutRenewed returns nil once the lease manager has logged n times that
// etcd renewed our lease after its expiry had passed by the clock.
func ranOutRenewed(logs *logLines, n int64) error {
	var got int64
	for _, l := range logs.get() {
		if strings.Contains(l, `"our etcd lease's last known expiry passed (the machine slept, or etcd answers slowly), but etcd renewed it"`) {
			got++
		}
	}
	if got < n {
		return fmt.Errorf("the lease manager logged %d renewals after the expiry had passed, want %d", got, n)
	}
	return nil
}

// TestReadyFollowsLeaseTTLByClock: readiness asks the time left on the lease
// when it is asked, so a lease held by the lease manager's account is not
// ready the moment its TTL has passed by the clock with no keepalive
// answered, ready again at the next answer (or a renewal the manager sent
// itself), and not ready once the etcd client gives the lease up. Nothing
// known of the lease's time left (no answer yet, a reservation) keeps the
// readiness as the lease manager says it; a lease not held says why it is
// not, alone.
func TestReadyFollowsLeaseTTLByClock(t *testing.T) {
	h := newTTLHarness(t)
	const id = 0xa
	var own atomic.Int64 // our lease's ID; 0: a reservation
	own.Store(id)
	hl := newHealth(logr.Discard())
	hl.notify = func(string) (bool, error) { return false, nil }
	hl.setLeaseLeft(func() (time.Duration, bool) {
		if own.Load() == 0 {
			return 0, false
		}
		return h.ttl.left(clientv3.LeaseID(own.Load()))
	})
	hl.setLeaseHeld(true, "")
	hl.setSubnetEnvWritten()
	hl.setPeersProgrammed()
	check := func(step string, wantReady bool, wantWhy string) {
		t.Helper()
		if ready, why := hl.ready(); ready != wantReady || why != wantWhy {
			t.Errorf("%s: ready %v %q; want %v %q", step, ready, why, wantReady, wantWhy)
		}
	}

	check("held, no keepalive answered yet", true, "")
	h.now = h.now.Add(2 * time.Hour)
	check("held, no keepalive answered yet, hours later", true, "")
	in, out := h.keepAlive(t.Context(), id)
	h.answer(in, out, id, 30)
	check("answered", true, "")
	h.now = h.now.Add(30*time.Second - time.Nanosecond)
	check("just short of the TTL", true, "")
	h.now = h.now.Add(time.Nanosecond)
	check("TTL passed", false, leaseRanOut)
	h.answer(in, out, id, 30)
	check("answered again", true, "")
	close(in) // the client gives the lease up: expired, or revoked
	h.closed(out)
	check("given up by the etcd client", false, leaseRanOut)
	h.ttl.renewed(id, 30*time.Second)
	check("renewed by the lease manager", true, "")
	h.now = h.now.Add(time.Minute)
	check("TTL passed again", false, leaseRanOut)
	hl.setLeaseHeld(false, "etcd lease a expired or was revoked")
	check("reported lost", false, "etcd lease a expired or was revoked")
	own.Store(0)
	hl.setLeaseHeld(true, "")
	check("a reservation", true, "")
}
