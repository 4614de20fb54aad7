package agent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
	"go.uber.org/goleak"
	"k8s.io/klog/v2"
)

// TestRunLeavesNoGoroutines runs agent.Run in-process against a real etcd,
// cancels it, and checks that every goroutine it started was joined: once
// after the agent was ready (lease held and kept alive, lease and config
// watches, kernel event watch, reconcile loop and resync ticker, health
// server), and once while it was still waiting at start-up for a network
// config that never came.
//
// agent.Run changes the network namespace it runs in (a vxlan device,
// routes, iptables chains), and a Go process cannot move all its threads
// into another namespace, so the test re-runs its own binary inside a
// cluster host's namespace and checks there (see leakChild):
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   this test binary again: agent.Run, then goleak
//	               └─ etcd 198.18.0.254  a real etcd, a fake vxlan peer's lease in it
func TestRunLeavesNoGoroutines(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config":                  `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
		"/coreos.com/network/subnets/10.244.250.0-24": `{"PublicIP":"198.18.0.250","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:00:00:00:00:fa"}}`,
		"/host-gw/config":                             `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`,
	}, leakChild)
}

// leakChild is the test proper, run inside h1's namespace.
func leakChild(t *testing.T, etcd string) {
	// Goroutines of the test binary and of packages' init (klog's flush
	// daemon) are not the agent's.
	ignore := goleak.IgnoreCurrent()

	t.Run("ready", func(t *testing.T) {
		cfg := leakConfig(t, etcd, "/coreos.com/network")
		stop, done := runAgent(t, cfg)
		waitHTTP(t, "http://"+cfg.HealthzAddr+"/readyz", 30*time.Second)
		// Let two resyncs (1 s apart) pass as well.
		var base int
		err := cluster.Eventually(context.Background(), 10*time.Second, func() (err error) {
			base, err = reconciles(cfg)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		err = cluster.Eventually(context.Background(), 10*time.Second, func() error {
			n, err := reconciles(cfg)
			if err != nil {
				return err
			}
			if n < base+2 {
				return fmt.Errorf("%d reconcile passes, waiting for %d", n, base+2)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		stop()
		if err := wait(t, done); err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
		verifyNone(t, ignore)
	})

	t.Run("failing", func(t *testing.T) {
		// host-gw refuses a public IP that is not the interface's: Run
		// fails after the health server and the config watch started.
		cfg := leakConfig(t, etcd, "/host-gw")
		cfg.PublicIP = netip.MustParseAddr("198.18.0.99")
		_, done := runAgent(t, cfg)
		if err := wait(t, done); err == nil || !strings.Contains(err.Error(), "behind NAT") {
			t.Fatalf("Run = %v, want the host-gw NAT error", err)
		}
		verifyNone(t, ignore)
	})

	t.Run("waiting for the config", func(t *testing.T) {
		cfg := leakConfig(t, etcd, "/no/such/network")
		stop, done := runAgent(t, cfg)
		// Up, not ready: it keeps retrying to read the config.
		waitHTTP(t, "http://"+cfg.HealthzAddr+"/healthz", 30*time.Second)
		stop()
		if err := wait(t, done); err != nil && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run after cancel: %v", err)
		}
		verifyNone(t, ignore)
	})
}

func leakConfig(t *testing.T, etcd, prefix string) agent.Config {
	dir := t.TempDir()
	cfg := agent.DefaultConfig()
	cfg.EtcdEndpoints = []string{etcd}
	cfg.EtcdPrefix = prefix
	cfg.Ifaces = []string{"eth0"}
	cfg.SubnetFile = filepath.Join(dir, "subnet.env")
	cfg.StateDir = dir
	cfg.HealthzAddr = "198.18.0.1:8471"
	cfg.IPMasq = true
	cfg.ResyncInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// runAgent starts agent.Run; stop cancels it, done yields its error.
func runAgent(t *testing.T, cfg agent.Config) (stop func(), done <-chan error) {
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), testr.New(t)))
	errc := make(chan error, 1)
	go func() { errc <- agent.Run(ctx, cfg) }()
	t.Cleanup(cancel)
	return cancel, errc
}

func wait(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of its context's end")
		return nil
	}
}

var reconcilesOK = regexp.MustCompile(`(?m)^agentd_reconciles_total\{result="ok"\} (\d+)$`)

// reconciles is the agent's count of successful reconcile passes. An error
// is for the caller's Eventually: one slow /metrics is no failure.
func reconciles(cfg agent.Config) (int, error) {
	_, body, err := get("http://" + cfg.HealthzAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	m := reconcilesOK.FindSubmatch(body)
	if m == nil {
		return 0, fmt.Errorf("no agentd_reconciles_total{result=\"ok\"} in /metrics:\n%s", body)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n, nil
}

// verifyNone is goleak.VerifyNone with more patience: VerifyNone gives up
// after about 0.43 s, but the gRPC, HTTP and netlink goroutines behind a
// Run that has returned exit asynchronously, later than that on a loaded
// machine with -race. A goroutine still there after 10 s is a leak.
func verifyNone(t *testing.T, opts ...goleak.Option) {
	t.Helper()
	if err := cluster.Eventually(context.Background(), 10*time.Second, func() error { return goleak.Find(opts...) }); err != nil {
		t.Error(err)
	}
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string, timeout time.Duration) {
	t.Helper()
	err := cluster.Eventually(context.Background(), timeout, func() error {
		code, _, err := get(url)
		if err != nil {
			return err
		}
		if code != http.StatusOK {
			return fmt.Errorf("%s: status %d", url, code)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// get fetches url without keeping the connection (an idle connection's
// goroutines would count as leaked).
func get(url string) (int, []byte, error) {
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}
