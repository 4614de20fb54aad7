package cniplugin

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestMasqRetryAddLockBounded: an ADD that waits for another command's
// retry of its container's masquerade chain
// (TestMasqRetryAddWaitsForContainersChain) waits masqLockWait at most,
// then fails with code 11 (try again later) naming the lock, having saved
// nothing and run no delegate. Before, it waited on the lock without a
// limit: as long as the other command's iptables calls took (each up to a
// second for the xtables lock, per family) or, if that was an ADD, its
// wait for subnet.env; kubelet and containerd time out on an ADD that does
// not return, and the pod stays in ContainerCreating.
func TestMasqRetryAddLockBounded(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	recordMasqFailures(t, f, "c1")

	release, retrying := holdRetry(t, f)
	delegate := &fakeExec{}
	start := f.now
	var waited time.Duration
	added := make(chan error, 1)
	go func() {
		p := *f.p
		p.Stdout, p.Stderr = io.Discard, io.Discard
		p.Exec = delegate
		p.masq = &fakeMasq{}
		now := start
		p.now = func() time.Time { return now }
		p.sleep = func(d time.Duration) { now = now.Add(d) }
		err := p.Add(f.attach("cbr0", "c1", "net1", ""))
		waited = now.Sub(start)
		added <- err
	}()
	const limit = 10 * time.Second
	select {
	case err := <-added:
		close(release)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrTryAgainLater || !strings.Contains(te.Msg, filepath.Join(f.dataDir, masqRetryDir)) {
			t.Errorf("ADD of c1 net1 while a retry of c1 eth0's chain is held: %v, want code 11 naming %s", err, masqRetryDir)
		}
		if waited < masqLockWait {
			t.Errorf("ADD of c1 net1 gave up after %v, want %v", waited, masqLockWait)
		}
	case <-time.After(limit):
		close(release)
		<-added
		t.Fatalf("ADD of c1 net1 still waited for another command's retry of c1 eth0's chain after %v", limit)
	}
	if len(delegate.calls) != 0 {
		t.Errorf("the failed ADD ran the delegate: %+v", delegate.calls)
	}
	if _, err := os.Stat(filepath.Join(f.dataDir, "cbr0:c1:net1")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the failed ADD saved its attachment (%v)", err)
	}
	if err := <-retrying; err != nil {
		t.Errorf("DEL of c2: %v", err)
	}
}
