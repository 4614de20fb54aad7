package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// followMTUWriteFailing runs followMTU for an MTU lowered from 1450 to 1400
// while subnet.env cannot be written (a file where its directory should
// be): it returns the agent's log lines, the context followMTU runs under
// and its cancel, and a channel closed when followMTU has returned. fail
// must not be called.
func followMTUWriteFailing(t *testing.T) (*logLines, context.Context, context.CancelFunc, chan struct{}) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "run")
	if err := os.WriteFile(blocker, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	a := &agent{
		cfg:        Config{SubnetFile: filepath.Join(blocker, "subnet.env"), StateDir: dir},
		log:        log,
		health:     newHealth(log),
		obs:        newObserver(),
		mtuChanged: make(chan struct{}, 1),
	}
	a.health.notify = func(string) (bool, error) { return false, nil }
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	a.mtu.Store(1400)
	signal(a.mtuChanged)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.followMTU(ctx, &env, func(err error) { t.Errorf("fail(%v) called", err) })
	}()
	return logs, ctx, cancel, done
}

// TestFollowMTUStopWhileWriteFails: a stop while subnet.env's rewrite for a
// new MTU is retried (a file where its directory should be) ends followMTU
// without a line saying that subnet.env's MTU was lowered, as it was not,
// and without calling fail.
func TestFollowMTUStopWhileWriteFails(t *testing.T) {
	logs, ctx, cancel, done := followMTUWriteFailing(t)
	defer cancel()
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		for _, l := range logs.get() {
			if strings.Contains(l, "cannot write subnet.env") {
				return nil
			}
		}
		return errors.New("no failed write of subnet.env logged")
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("followMTU did not return within 10 s of its context's end")
	}
	for _, l := range logs.get() {
		if strings.Contains(l, mtuLoweredMsg) {
			t.Errorf("logged %s, but subnet.env was never written", l)
		}
	}
}

// TestFollowMTUWriteFailSaysOldMTU: while subnet.env's rewrite for a new MTU
// fails, the line that says so tells what holds meanwhile: subnet.env, written
// at the start, still gives new containers the old MTU. It does not say that
// containers get no address, which is what a failed first write means.
func TestFollowMTUWriteFailSaysOldMTU(t *testing.T) {
	logs, ctx, cancel, done := followMTUWriteFailing(t)
	defer cancel()
	var line string
	err := cluster.Eventually(ctx, 10*time.Second, func() error {
		for _, l := range logs.get() {
			if strings.Contains(l, "cannot write subnet.env") {
				line = l
				return nil
			}
		}
		return errors.New("no failed write of subnet.env logged")
	})
	cancel()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, "no address") || !strings.Contains(line, "MTU 1450") || !strings.Contains(line, "1400") {
		t.Errorf("failed rewrite logged as %s; want it to say that new containers get MTU 1450, not 1400, meanwhile", line)
	}
}
