package subnet_test

import (
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/boottime"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestLeaseLapsedWhileAsleep: the host is suspended (a laptop's lid closed,
// a VM paused) for twice the lease's TTL. Go's timers and monotonic clock
// stand still meanwhile, so the etcd client's keepalive deadline and Run's
// own timers are as far away after the resume as before it; the clock the
// manager judges the expiry by (boottime in production, moved by the test
// here) is not.
//
// With etcd unreachable after the resume, the lease ran out by every clock
// that counted the sleep: it is reported lost with the expiry's wall time,
// an hour ago, within seconds. Before, it stayed held, by
// "holding it until its last known expiry", for the rest of the TTL.
//
// With etcd reachable and the lease still alive there (etcd slept too, on
// the same machine), etcd renews it when asked and it stays held.
func TestLeaseLapsedWhileAsleep(t *testing.T) {
	t.Parallel()
	const ttl = time.Hour
	for _, tc := range []struct {
		name        string
		unreachable bool
	}{
		{"etcd unreachable", true},
		{"etcd slept too", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, net16)
			var (
				slept    atomic.Int64 // time.Duration the host slept
				held     atomic.Bool
				kept     atomic.Bool // the keepalive stream's first answer was taken
				lost     lostReasons
				mu       sync.Mutex
				renewals []time.Duration // time left, as reported after the sleep
			)
			m := e.manager("198.18.0.1", hostID(1), pinned("10.244.1.0/24"), func(c *subnet.ManagerConfig) {
				c.TTL = ttl
				// The etcd client's keepalive answers at once after the grant.
				// Taken after the "sleep", it renews the lease by the clock
				// that counted the sleep, so no expiry has passed and nothing
				// asks etcd: that answer must come before the sleep.
				c.Logger = funcr.New(func(_, args string) {
					if strings.Contains(args, `"lease kept alive"`) {
						kept.Store(true)
					}
				}, funcr.Options{Verbosity: 4})
				c.Clock = func() time.Time { return boottime.Now().Add(time.Duration(slept.Load())) }
				c.OnLeaseState = func(h bool, reason string) {
					held.Store(h)
					lost.record(h, reason)
				}
				c.OnLeaseRenewed = func(_ int64, left time.Duration) {
					if slept.Load() == 0 {
						return
					}
					mu.Lock()
					defer mu.Unlock()
					renewals = append(renewals, left)
				}
			})
			l := acquire(t, m)
			returned := runWatched(t, m)
			eventuallyWithin(t, 10*time.Second, "lease held, its keepalive answered", func() error {
				if !held.Load() || !kept.Load() {
					return errors.New("not yet")
				}
				return nil
			})
			if tc.unreachable {
				if err := e.srv.SetLoopback(false); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { e.srv.SetLoopback(true) })
			}
			slept.Store(int64(2 * ttl))
			if tc.unreachable {
				_, at := lostExpiry(t, &lost, 30*time.Second)
				// The lease ran out a TTL after it was granted, a TTL
				// before the resume.
				if ago := time.Since(at); ago < ttl-time.Minute || ago > ttl+time.Minute {
					t.Errorf("expiry %s reported, %v ago; want about %v ago", at.Format(time.RFC3339), ago.Round(time.Second), ttl)
				}
				return
			}
			eventuallyWithin(t, 30*time.Second, "lease renewed after the sleep", func() error {
				if r := lost.get(); len(r) > 0 {
					t.Fatalf("lease reported lost: %q", r)
				}
				if ok, err := returned(); ok {
					t.Fatalf("Run returned: %v", err)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(renewals) == 0 {
					return errors.New("no renewal yet")
				}
				if renewals[0] <= 0 {
					t.Fatalf("renewed with %v left", renewals[0])
				}
				return nil
			})
			if own, _ := m.Own(); own.LeaseID != l.LeaseID || m.Stats.Reacquired.Load() != 0 {
				t.Fatalf("own lease %x (first %x), Reacquired %d", own.LeaseID, l.LeaseID, m.Stats.Reacquired.Load())
			}
			if r := lost.get(); len(r) > 0 {
				t.Fatalf("lease reported lost: %q", r)
			}
		})
	}
}
