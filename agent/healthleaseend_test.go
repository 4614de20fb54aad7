package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseEndHarness is a ready health whose lease's time left is ttl's for
// lease leaseEndID, with each message to systemd on sent and each log line
// in logs.
type leaseEndHarness struct {
	h    *health
	ttl  *leaseTTL
	sent chan string
	logs *logLines
}

const leaseEndID = clientv3.LeaseID(0xa)

func newLeaseEndHarness(t *testing.T, ttl *leaseTTL) *leaseEndHarness {
	t.Helper()
	x := &leaseEndHarness{ttl: ttl, sent: make(chan string, 64), logs: &logLines{}}
	x.h = newHealth(funcr.New(x.logs.add, funcr.Options{}))
	x.h.notify = func(msg string) (bool, error) {
		x.sent <- msg
		return true, nil
	}
	x.h.setLeaseLeft(func() (time.Duration, bool) { return ttl.left(leaseEndID) })
	x.h.setLeaseHeld(true, "")
	x.h.setSubnetEnvWritten()
	x.h.setPeersProgrammed()
	for len(x.sent) > 1 { // each step's not ready; the last is the ready one
		<-x.sent
	}
	x.next(t, "ready", "READY=1\nSTATUS=ready", 0)
	t.Cleanup(x.h.stopping)
	return x
}

// next waits up to wait (0: it must be sent already) for the next message
// to systemd and checks that it is want.
func (x *leaseEndHarness) next(t *testing.T, step, want string, wait time.Duration) {
	t.Helper()
	var got string
	if wait == 0 {
		select {
		case got = <-x.sent:
		default:
			t.Fatalf("%s: nothing sent to systemd, want %q", step, want)
		}
	} else {
		select {
		case got = <-x.sent:
		case <-time.After(wait):
			t.Fatalf("%s: nothing sent to systemd within %s, want %q", step, wait, want)
		}
	}
	if got != want {
		t.Fatalf("%s: sent %q, want %q", step, got, want)
	}
}

// lastLog checks that the last line logged holds want.
func (x *leaseEndHarness) lastLog(t *testing.T, step, want string) {
	t.Helper()
	got := x.logs.get()
	if len(got) == 0 || !strings.Contains(got[len(got)-1], want) {
		t.Fatalf("%s: logged %q, want a last line with %q", step, got, want)
	}
}

// TestLeaseLapseSentWhenItHappens: STATUS= (what `systemctl status agentd`
// shows) and the "not ready" log line said that our etcd lease's TTL had
// passed with no keepalive answered only at the next change of readiness,
// however long after (until the lease manager reported the lease lost, or
// never when etcd renewed it meanwhile), while /readyz said it from the
// TTL's end. Now a timer set at each answer for the TTL's end says it then,
// with no probe or /status asked, and an answer after it says ready again
// at once. Here the lease manager's renewal is answered with 300 ms left
// and then nothing.
func TestLeaseLapseSentWhenItHappens(t *testing.T) {
	ttl := &leaseTTL{}
	x := newLeaseEndHarness(t, ttl)
	ttl.changed = x.h.leaseTimeChanged

	start := time.Now()
	ttl.renewed(int64(leaseEndID), 300*time.Millisecond)
	x.next(t, "300 ms after the last answer", "STATUS=not ready: "+leaseRanOut, 10*time.Second)
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Fatalf("not ready sent %s after an answer that left 300 ms", took)
	}
	x.lastLog(t, "300 ms after the last answer", `"msg"="not ready" "reason"="`+leaseRanOut+`"`)

	ttl.renewed(int64(leaseEndID), time.Hour)
	x.next(t, "answered again", "STATUS=ready", 0)
	x.lastLog(t, "answered again", `"msg"="ready"`)
}

// TestLeaseLapseSentAtProbeAfterSleep: the timer at the TTL's end runs on
// CLOCK_MONOTONIC, which stops while the machine sleeps; the lease's time is
// judged by CLOCK_BOOTTIME, which does not. A probe answered after a sleep
// past the TTL said 503, but the "not ready" line and STATUS= waited for the
// next change of readiness. Now the probe that finds the change logs and
// sends it (here the lease clock jumps an hour past a TTL of 30 s).
func TestLeaseLapseSentAtProbeAfterSleep(t *testing.T) {
	now := time.Now()
	ttl := &leaseTTL{now: func() time.Time { return now }}
	x := newLeaseEndHarness(t, ttl)
	ttl.renewed(int64(leaseEndID), 30*time.Second)
	now = now.Add(time.Hour) // before the server's goroutines start, which read it

	srv := httptest.NewServer(x.h.handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz an hour past a TTL of 30 s: %s, want 503", resp.Status)
	}
	x.next(t, "probe after the sleep", "STATUS=not ready: "+leaseRanOut, 0)
	x.lastLog(t, "probe after the sleep", `"msg"="not ready" "reason"="`+leaseRanOut+`"`)
}
