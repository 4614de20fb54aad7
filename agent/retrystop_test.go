package agent

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// TestRetryStopDuringExplainLogsNothing: a start-up request times out
// against a hung etcd (a socket the kernel takes connections on, nothing
// answering) and the agent stops while the retry's explanation waits for
// GET /version's answer (up to 2 s per endpoint). The stop ends the wait,
// and that is no finding about etcd: the retry returns the stop, logging
// nothing and reporting nothing, as the outage reporter does
// (TestOutageReporterStopLogsNothing). It logged "cannot … retrying" with
// the cancelled probe for its reason, the agent's last line.
func TestRetryStopDuringExplainLogsNothing(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "hung.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The stop comes once the explanation has asked GET /version and waits
	// for the answer; the connections stay open, unanswered, until then.
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			var b [3]byte
			if n, _ := c.Read(b[:]); string(b[:n]) == "GET" {
				cancel()
				<-ctx.Done()
				return
			}
		}
	}()

	var mu sync.Mutex
	var lines, reports []string
	log := funcr.New(func(_, args string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, args)
	}, funcr.Options{})
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"unix://" + sock}
	c, err := newEtcdClient(&cfg, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = retry(ctx, log, c, "read the network config", func(_ string, err error) {
		if err != nil {
			mu.Lock()
			defer mu.Unlock()
			reports = append(reports, err.Error())
		}
	}, nil, func(context.Context) (int, error) {
		return 0, context.DeadlineExceeded
	})
	<-accepted
	if !errors.Is(err, context.Canceled) {
		t.Errorf("retry: %v, want the stop", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) > 0 || len(reports) > 0 {
		t.Errorf("at the stop, logged %q and reported %q; want nothing", lines, reports)
	}
}
