package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zapcore"
)

// TestEtcdReconnectBackoffCapped: while etcd refuses the client's
// connections, the client tries again at least every 5 s (dialEtcd's
// backoff, 5 s at most, 20 % jitter), not at gRPC's default delays, which
// grow to 2 minutes: after a long outage the agent would find etcd back
// only that late. The endpoint here takes each connection and closes it
// (a restarting etcd), and a watch keeps the client reconnecting, as the
// agent's does; the gaps between attempts, once grown past the cap, stay
// at it (by default the 7th is about 17 s).
func TestEtcdReconnectBackoffCapped(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "etcd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	const want = 8
	attempts := make(chan time.Time, 100)
	serveEach(t, ln, func(c net.Conn) {
		b := make([]byte, 1)
		if _, err := c.Read(b); err == nil {
			select {
			case attempts <- time.Now():
			default:
			}
		}
	})
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"unix://" + sock}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go c.Watch(clientv3.WithRequireLeader(ctx), "/watched")
	var at []time.Time
	deadline := time.After(2 * time.Minute)
	for len(at) < want {
		select {
		case a := <-attempts:
			at = append(at, a)
		case <-deadline:
			t.Fatalf("%d connection attempts in 2 minutes, want %d", len(at), want)
		}
	}
	var gaps []time.Duration
	for i := 1; i < len(at); i++ {
		gaps = append(gaps, at[i].Sub(at[i-1]).Round(10*time.Millisecond))
	}
	t.Logf("gaps between attempts: %v", gaps)
	// The cap with its jitter is 6 s; 2 s more for a loaded machine.
	if last := gaps[len(gaps)-1]; last > 8*time.Second {
		t.Errorf("attempt %d came %s after the one before (gaps %v); want at most 5 s, and 20 %% jitter", want, last, gaps)
	}
}

// TestRetryForgetsOldCauses: retry remembers the last retryCausesKept
// causes it logged, no more: a cause that comes back after that many
// others is logged again. Causes that never come back (a message naming a
// changing port) must not fill the agent's memory while etcd stays away.
// The config watch's wake (closed here) makes each attempt follow the last
// after retryWokenAfter.
func TestRetryForgetsOldCauses(t *testing.T) {
	var causes []error
	for i := range retryCausesKept + 1 {
		causes = append(causes, fmt.Errorf("dial tcp 198.18.0.254:2379: connect from port %d: connection refused", 40000+i))
	}
	causes = append(causes, causes[0]) // back after retryCausesKept others
	var logs logLines
	wake := make(chan struct{})
	close(wake)
	attempts := 0
	_, err := retry(t.Context(), funcr.New(logs.add, funcr.Options{}), explained{}, "read the network config", func(string, error) {}, wake,
		func(context.Context) (int, error) {
			attempts++
			if attempts > len(causes) {
				return attempts, nil
			}
			return 0, causes[attempts-1]
		})
	if err != nil {
		t.Fatal(err)
	}
	if n := logs.count("; retrying"); n != len(causes) {
		t.Errorf("%d lines say retry retries, want %d: the first cause, back after %d others, logged again:\n%s",
			n, len(causes), retryCausesKept, strings.Join(logs.get(), "\n"))
	}
}

// TestEtcdClientLogsNothing: the etcd client's own logger is off. Its
// lines go to stderr, the journal under systemd, and repeat every retry of
// every connection and request while etcd is away; agentd says an outage
// once (reportOutages).
func TestEtcdClientLogsNothing(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{silentSocket(t)}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, l := range []zapcore.Level{zapcore.DebugLevel, zapcore.WarnLevel, zapcore.ErrorLevel, zapcore.FatalLevel} {
		if c.GetLogger().Core().Enabled(l) {
			t.Errorf("the etcd client logs at level %s, want at none", l)
		}
	}
}

// TestRetryWokenNoSooner: a wake (the network config rewritten) starts
// the next attempt early, but no sooner than retryWokenAfter after the
// last one began, or than the backoff's own delay when that is shorter
// (the first, 250 to 500 ms): a script rewriting the config in a loop
// makes a waiting agent ask etcd at most twice a second, not once per
// write.
func TestRetryWokenNoSooner(t *testing.T) {
	wake := make(chan struct{})
	close(wake) // a write at every moment
	var began []time.Time
	_, err := retry(t.Context(), logr.Discard(), explained{}, "read the network config", func(string, error) {}, wake,
		func(context.Context) (int, error) {
			began = append(began, time.Now())
			if len(began) == 4 {
				return 0, nil
			}
			return 0, errors.New("config: no such key")
		})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(began); i++ {
		want := retryWokenAfter
		if i == 1 {
			want = retryWokenAfter / 2 // the first backoff's least
		}
		if gap := began[i].Sub(began[i-1]); gap < want {
			t.Errorf("attempt %d began %s after the one before, woken; want no sooner than %s", i+1, gap, want)
		}
	}
}

// TestRetryBackoffStartsShort: retry's first waits are short (500 ms
// doubling, each drawn from its second half), so that a start-up request
// that failed while etcd was a moment away is sent again within a second,
// and not at once (a busy loop against an etcd that is down).
func TestRetryBackoffStartsShort(t *testing.T) {
	var began []time.Time
	_, err := retry(t.Context(), logr.Discard(), explained{}, "read the network config", func(string, error) {}, nil,
		func(context.Context) (int, error) {
			began = append(began, time.Now())
			if len(began) == 3 {
				return 0, nil
			}
			return 0, errors.New("config: no such key")
		})
	if err != nil {
		t.Fatal(err)
	}
	// The upper bounds leave 3 s for a loaded machine (2.6 s seen with
	// other tests running) and stay below 5 s, the least first wait of a
	// backoff that would start at retry's cap (10 s, drawn from its
	// second half).
	for i, want := range []struct{ least, most time.Duration }{
		{250 * time.Millisecond, 4 * time.Second},
		{500 * time.Millisecond, 4 * time.Second},
	} {
		if gap := began[i+1].Sub(began[i]); gap < want.least || gap > want.most {
			t.Errorf("attempt %d began %s after the one before; want %s to %s", i+2, gap, want.least, want.most)
		}
	}
}

// TestRetryAttemptBounded: a start-up request that gets no answer (etcd
// takes connections and answers nothing) ends after etcdCallTimeout, is
// reported with its cause for /readyz, and is sent again: the etcd
// client's requests wait as long as their context lasts.
func TestRetryAttemptBounded(t *testing.T) {
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{silentSocket(t)}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	reported := make(chan error, 10)
	done := make(chan error, 1)
	go func() {
		_, err := retry(ctx, logr.Discard(), c, "read the network config", func(_ string, err error) { reported <- err }, nil,
			func(ctx context.Context) (*clientv3.GetResponse, error) {
				return c.Get(ctx, "/coreos.com/network/config")
			})
		done <- err
	}()
	select {
	case err := <-reported:
		t.Logf("reported: %v", err)
		if err == nil || !strings.Contains(err.Error(), "etcd did not answer within "+etcdCallTimeout.String()) {
			t.Errorf("reported %v; want the request unanswered within %s", err, etcdCallTimeout)
		}
	case <-time.After(etcdCallTimeout + 20*time.Second):
		t.Errorf("nothing reported %s after the first attempt began; want the attempt ended after %s", etcdCallTimeout+20*time.Second, etcdCallTimeout)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("retry after the stop: %v; want %v", err, context.Canceled)
	}
}
