package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/sockclaim"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// Log lines of the agent about its claim on the network namespace.
const (
	claimSquattedMsg = "the agents' claim on this network namespace is held by a process of another user"
	claimRetakenMsg  = "took the agents' claim on this network namespace"
)

// TestSquattedNetnsClaimRetaken: a process of another user holds
// @agentd-agent when the agent starts, which goes on without the claim; the
// squatter exits later. The agent then takes the claim, says so once, and
// from then on a second agent in the namespace (its own state dir, subnet
// file and health address, as for a second overlay network) is refused,
// naming the running agent, as in TestSecondAgentSameHealthAddr. Before,
// the agent never took it while it ran: the name stayed free, and a second
// agent got past the claim. It is taken while the agent is ready, and
// while it still waits at start-up for a network config (the reconcile
// loop has not started), and it is let go when Run returns, as the claim
// taken at start is. The health server answers as before.
func TestSquattedNetnsClaimRetaken(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, squattedClaimChild)
}

func squattedClaimChild(t *testing.T, etcd string) {
	t.Run("ready", func(t *testing.T) {
		squattedClaimRun(t, etcd, "/coreos.com/network", "/readyz")
	})
	t.Run("waiting for the config", func(t *testing.T) {
		// Up, not ready: it keeps retrying to read the config.
		squattedClaimRun(t, etcd, "/no/such/network", "/healthz")
	})
}

// squattedClaimRun runs an agent on prefix beside a squatter of its claim,
// waits until path answers 200, lets the squatter exit and checks that the
// agent takes the claim, refuses a second agent and lets the claim go
// when it stops.
func squattedClaimRun(t *testing.T, etcd, prefix, path string) {
	free := startNetnsSquatter(t)
	var logs logLines
	cfg := hostConfig(t, etcd, prefix)
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})))
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg) }()
	running := true
	stop := func() error {
		running = false
		cancel()
		return waitRun(t, errc)
	}
	defer func() {
		if running {
			_ = stop()
		}
	}()
	healthURL := "http://" + cfg.HealthzAddr
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		code, body, err := httpGet(healthURL + path)
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("%s: %d %s", path, code, body)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := logs.count(claimSquattedMsg); n != 1 {
		t.Fatalf("the agent logged %q %d times at start beside the squatter, want once:\n%s", claimSquattedMsg, n, strings.Join(logs.get(), "\n"))
	}

	free()
	self := []int{os.Getpid()}
	wait := 3 * netnsClaimRetryEvery
	err = cluster.Eventually(ctx, wait, func() error {
		if holders := sockclaim.Holders(netnsClaimAddr); !slices.Equal(holders, self) {
			return fmt.Errorf("%s held by %v, want the running agent (pid %d)", netnsClaimAddr, holders, os.Getpid())
		}
		return nil
	})
	if err != nil {
		// Say what a second agent would have found.
		f, _, cerr := claimNetns()
		if f != nil {
			f.Close()
		}
		t.Fatalf("%v after the squatter exited the running agent holds no claim (%v): a second agent's claim now takes the name: %t, error %v; it would not be refused",
			wait, err, f != nil, cerr)
	}
	// The line follows the claim by a moment.
	if err := cluster.Eventually(ctx, 5*time.Second, logs.seen(claimRetakenMsg, "the claim's retake not logged")); err != nil {
		t.Fatal(err)
	}
	if n := logs.count(claimRetakenMsg); n != 1 {
		t.Errorf("the agent logged %q %d times, want once:\n%s", claimRetakenMsg, n, strings.Join(logs.get(), "\n"))
	}

	second := hostConfig(t, etcd, "/agentd-b/network")
	second.HealthzAddr = "198.18.0.1:8481"
	sctx, scancel := context.WithTimeout(klog.NewContext(context.Background(), logr.Discard()), 30*time.Second)
	err = Run(sctx, second)
	scancel()
	if _, ok := errors.AsType[*agentInNetnsError](err); !ok ||
		!strings.Contains(err.Error(), fmt.Sprintf("another agentd (pid %d) runs in this network namespace", os.Getpid())) {
		t.Errorf("a second agent once the claim was taken: %v, want it refused by the namespace's claim, naming pid %d", err, os.Getpid())
	}
	if code, body, err := httpGet(healthURL + path); err != nil || code != http.StatusOK {
		t.Errorf("%s after the claim was taken: %d %s %v, want 200", path, code, body, err)
	}

	if err := stop(); err != nil {
		t.Errorf("Run after cancel: %v", err)
	}
	f, _, err := claimNetns()
	if err != nil || f == nil {
		t.Errorf("the claim after Run returned: %v, %v; want it free", f, err)
	}
	if f != nil {
		f.Close()
	}
}

// count returns how many lines logged so far contain s.
func (l *logLines) count(s string) int {
	n := 0
	for _, line := range l.get() {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// seen is a condition for cluster.Eventually: nil once a line logged so
// far contains s, else an error saying notYet.
func (l *logLines) seen(s, notYet string) func() error {
	return func() error {
		if l.count(s) == 0 {
			return errors.New(notYet)
		}
		return nil
	}
}

// readyErr is a condition for cluster.Eventually: nil once the agent is
// ready, else the reason it is not.
func (a *agent) readyErr() error {
	if ready, why := a.health.ready(); !ready {
		return errors.New(why)
	}
	return nil
}

// startNetnsSquatter starts a process of another user (TestNetnsClaim's
// squatter) holding the claim's name in this network namespace, and
// returns what makes it exit and waits for that.
func startNetnsSquatter(t *testing.T) (free func()) {
	t.Helper()
	squatter := exec.Command("/proc/self/exe", "-test.run=^TestNetnsClaim$")
	squatter.Env = append(os.Environ(), netnsSquatterEnv+"=1")
	stop, err := testchild.StartReady(squatter, nil)
	if err != nil {
		t.Fatalf("the squatter: %v", err)
	}
	done := false
	free = func() {
		if done {
			return
		}
		done = true
		if err := stop(); err != nil {
			t.Errorf("the squatter: %v", err)
		}
	}
	t.Cleanup(free)
	return free
}
