package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
	clientv3 "go.etcd.io/etcd/client/v3"
	"k8s.io/klog/v2"
)

// The tests of this file run the agent whole, against a real etcd, inside
// the namespace of a cluster host: agent.Run changes the network namespace
// it runs in, and a Go process cannot move all its threads into another
// one, so each test runs its own binary again in h1 (see cluster.RunInHost).
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   this test binary again: the test proper
//	               └─ etcd 198.18.0.254  a real etcd holding kvs

// hostConfig is the config of an agent in h1 of cluster.RunInHost's cluster.
func hostConfig(t *testing.T, etcd, prefix string) Config {
	t.Helper()
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{etcd}
	cfg.EtcdPrefix = prefix
	cfg.Ifaces = []string{"eth0"}
	cfg.SubnetFile = filepath.Join(dir, "subnet.env")
	cfg.StateDir = dir
	cfg.HealthzAddr = "198.18.0.1:8471"
	cfg.ResyncInterval = time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestStopDuringPrepare: a stop while the backend prepares its datapath
// (which can take a while: udp waits for its device, vxlan for a free
// port) is a clean stop, as at every other step of start-up, not an error
// that makes the service manager restart a stopped agent; and when another
// part's failure is what stopped the run, Run returns that failure, not
// the backend's "context canceled".
func TestStopDuringPrepare(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/fake/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, stopDuringPrepareChild)
}

// preparingBackend is a fakeBackend whose Prepare returns only when its
// context ends, with the context's error (as a backend's wait does).
type preparingBackend struct {
	fakeBackend
	entered chan struct{}
}

func (b *preparingBackend) Prepare(ctx context.Context) (json.RawMessage, error) {
	close(b.entered)
	<-ctx.Done()
	return nil, fmt.Errorf("wait for the device: %w", ctx.Err())
}

func stopDuringPrepareChild(t *testing.T, etcd string) {
	// run runs the agent in ctx with a backend that is still preparing
	// when stop is called, and returns what Run returned.
	run := func(t *testing.T, ctx context.Context, stop func()) error {
		t.Helper()
		be := &preparingBackend{entered: make(chan struct{})}
		log := testr.New(t)
		a := &agent{
			cfg:      hostConfig(t, etcd, "/fake"),
			log:      log,
			backends: backend.Registry{"fake": func(backend.Config) (backend.Backend, error) { return be, nil }},
			health:   newHealth(log),
			obs:      newObserver(),
		}
		errc := make(chan error, 1)
		go func() { errc <- a.run(klog.NewContext(ctx, log)) }()
		select {
		case <-be.entered:
		case err := <-errc:
			t.Fatalf("Run returned before the backend prepared: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("the backend's Prepare was not called within 30 s")
		}
		stop()
		select {
		case err := <-errc:
			return err
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not return within 30 s of its context's end")
			return nil
		}
	}

	t.Run("stopped", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(t, ctx, cancel); err != nil {
			t.Errorf("Run stopped during Prepare = %v, want nil (a clean stop)", err)
		}
	})

	t.Run("another part failed", func(t *testing.T) {
		// A cancel with a cause stands in for a part of the run that
		// fails while the backend prepares (the health server, through
		// fail): either way the run's context ends with that cause.
		failed := errors.New("health server: accept tcp 198.18.0.1:8471: too many open files")
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		err := run(t, ctx, func() { cancel(failed) })
		if !errors.Is(err, failed) {
			t.Errorf("Run = %v, want the failure that stopped it: %v", err, failed)
		}
	})
}

// TestLeaseTTLMetricCostsEtcdNothing: agentd_lease_ttl_remaining_seconds is
// there once the lease is held, close to the lease's TTL, and no scrape
// sends etcd a request (1000 agents scraped every 15 s would be 67 requests
// a second): etcd's own count of LeaseTimeToLive requests does not move.
func TestLeaseTTLMetricCostsEtcdNothing(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`,
	}, leaseTTLChild)
}

var (
	leaseTTLMetric = regexp.MustCompile(`(?m)^agentd_lease_ttl_remaining_seconds (\S+)$`)
	// etcd's gRPC server counts the requests it gets, by method.
	etcdStarted = func(method string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^grpc_server_started_total\{[^}]*grpc_method="` + method + `"[^}]*\} (\d+)$`)
	}
	etcdTimeToLives = etcdStarted("LeaseTimeToLive")
	etcdGrants      = etcdStarted("LeaseGrant")
)

func leaseTTLChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	ctx, stop := startRun(t, cfg, testr.New(t))
	defer stop()
	agentURL := "http://" + cfg.HealthzAddr
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		code, body, err := httpGet(agentURL + "/readyz")
		if err == nil && code != http.StatusOK {
			err = fmt.Errorf("/readyz: %d %s", code, body)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	// timeToLives is etcd's count of LeaseTimeToLive requests.
	timeToLives := func() int {
		t.Helper()
		_, body, err := httpGet(etcd + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		// Our lease was granted: etcd counts requests by method.
		if m := etcdGrants.FindSubmatch(body); m == nil || string(m[1]) == "0" {
			t.Fatalf("etcd's /metrics counts no LeaseGrant request:\n%s", body)
		}
		m := etcdTimeToLives.FindSubmatch(body)
		if m == nil {
			return 0 // none yet
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	before := timeToLives()
	ttl := cfg.SubnetLeaseTTL.Seconds()
	for i := range 5 {
		_, body, err := httpGet(agentURL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m := leaseTTLMetric.FindSubmatch(body)
		if m == nil {
			t.Fatal("/metrics has no agentd_lease_ttl_remaining_seconds while the lease is held")
		}
		if i == 0 {
			t.Logf("agentd_lease_ttl_remaining_seconds %s (TTL %v)", m[1], cfg.SubnetLeaseTTL)
		}
		if v, err := strconv.ParseFloat(string(m[1]), 64); err != nil || v <= ttl-60 || v > ttl {
			t.Errorf("agentd_lease_ttl_remaining_seconds %s, want within a minute of the lease's TTL %v", m[1], ttl)
		}
	}
	if after := timeToLives(); after != before {
		t.Errorf("5 scrapes of /metrics sent etcd %d LeaseTimeToLive requests, want none", after-before)
	}
}

// httpGet fetches url without keeping the connection.
func httpGet(url string) (int, []byte, error) {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, body, err
}

// TestLeaseLostRemovesSubnetEnv: a stop leaves subnet.env in place (dockerd
// and pods keep working across a restart); when another host takes our
// subnet's key, the agent ends with ErrLeaseLost and subnet.env is gone, so
// that the CNI plugin and dockerd give out no address in that host's subnet.
// The next start still knows the subnet: with the key freed meanwhile it
// takes the same subnet back, with the key still taken it leases another and
// says MOVING TO ANOTHER SUBNET, as it did when subnet.env stayed.
func TestLeaseLostRemovesSubnetEnv(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/freed/config":    `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
		"/taken/config":    `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
		"/released/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
		"/expired/config":  `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, leaseLostChild)
}

func leaseLostChild(t *testing.T, etcd string) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{etcd}, DialTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// freed: the other host's key is deleted before the next start; taken:
	// it is not; released: it is not, and --release-lease runs first.
	// expired: no other host; our key is gone (its TTL ran out while the
	// agent was stopped) when --release-lease runs.
	for _, name := range []string{"freed", "taken", "released", "expired"} {
		t.Run(name, func(t *testing.T) {
			prefix := "/" + name
			cfg := hostConfig(t, etcd, prefix)
			logs := &logLines{}
			log := funcr.New(func(prefix, args string) {
				logs.add(prefix, args)
				t.Log(prefix, args)
			}, funcr.Options{})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()

			// start runs an agent until it is ready; stop ends it
			// and returns what Run returned.
			start := func() (errc <-chan error, stop func()) {
				t.Helper()
				return startFakeAgent(ctx, t, cfg, log)
			}
			result := func(errc <-chan error) error {
				t.Helper()
				select {
				case err := <-errc:
					return err
				case <-time.After(30 * time.Second):
					t.Fatal("Run did not return within 30 s")
					return nil
				}
			}
			subnetEnv := func(step string) netip.Prefix {
				t.Helper()
				env, err := subnetenv.Read(cfg.SubnetFile)
				if err != nil {
					t.Fatalf("%s: %v", step, err)
				}
				if _, err := os.Stat(lostSubnetPath(cfg.StateDir)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: %s is there (%v), want it removed once subnet.env is written", step, lostSubnetFile, err)
				}
				return env.LeaseSubnet()
			}

			errc, stop := start()
			stop()
			if err := result(errc); err != nil {
				t.Fatalf("Run after a stop = %v, want nil", err)
			}
			sn := subnetEnv("after a stop")
			if name == "expired" {
				if _, err := cli.Delete(ctx, prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{})); err != nil {
					t.Fatal(err)
				}
				if err := release(ctx, log, cfg); err != nil {
					t.Fatalf("--release-lease with our key gone: %v", err)
				}
				if _, err := os.Stat(cfg.SubnetFile); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("--release-lease with our key gone left %s (%v), want it removed: it names a subnet this host no longer holds", cfg.SubnetFile, err)
				}
				return
			}

			errc, _ = start()
			if got := subnetEnv("restarted"); got != sn {
				t.Fatalf("restarted, subnet.env names %s, want %s", got, sn)
			}
			key := prefix + "/subnets/" + subnet.MakeSubnetKey(sn, netip.Prefix{})
			other := `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"fake","HostID":"0123456789abcdef0123456789abcdef"}`
			if _, err := cli.Put(ctx, key, other); err != nil {
				t.Fatal(err)
			}
			if err := result(errc); !errors.Is(err, subnet.ErrLeaseLost) {
				t.Fatalf("Run after another host took our key = %v, want %v", err, subnet.ErrLeaseLost)
			}
			if _, err := os.Stat(cfg.SubnetFile); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("subnet.env after the lease was lost: %v, want it removed", err)
			}
			if kept, err := subnetenv.Read(lostSubnetPath(cfg.StateDir)); err != nil || kept.LeaseSubnet() != sn {
				t.Errorf("kept %s: %v, %v, want %s", lostSubnetFile, kept.LeaseSubnet(), err, sn)
			}

			switch name {
			case "freed":
				if _, err := cli.Delete(ctx, key); err != nil {
					t.Fatal(err)
				}
			case "released":
				if err := release(ctx, log, cfg); err != nil {
					t.Fatalf("--release-lease after the loss: %v", err)
				}
				if _, err := os.Stat(lostSubnetPath(cfg.StateDir)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("--release-lease left %s (%v), want it removed", lostSubnetFile, err)
				}
				if r, err := cli.Get(ctx, key); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != other {
					t.Errorf("--release-lease after the loss: the other host's key %s is %v, %v; want it untouched", key, r, err)
				}
			}
			logged := len(logs.get())
			errc, stop = start()
			got := subnetEnv("started after the loss")
			moving := strings.Contains(strings.Join(logs.get()[logged:], "\n"), "MOVING TO ANOTHER SUBNET")
			switch {
			case name == "freed" && (got != sn || moving):
				t.Errorf("started with the key freed: subnet %s (moving logged: %v), want %s again", got, moving, sn)
			case name == "taken" && (got == sn || !moving):
				t.Errorf("started with the key taken: subnet %s (moving logged: %v), want another one and MOVING TO ANOTHER SUBNET", got, moving)
			case name == "released" && (got == sn || moving):
				t.Errorf("started after --release-lease: subnet %s (moving logged: %v), want another one without MOVING TO ANOTHER SUBNET (no previous subnet is left)", got, moving)
			}
			stop()
			if err := result(errc); err != nil {
				t.Errorf("Run after a stop = %v, want nil", err)
			}
		})
	}
}

// waitRun waits for Run's result on done, failing t if it takes more than
// 30 s.
func waitRun(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of its context's end")
		return nil
	}
}

// startRun starts Run of cfg, as agentd does, logging to log, under a
// context of 2 minutes, which it returns. stop cancels Run and fails the
// test if Run ended with an error; a Run not stopped so is cancelled and
// waited for at the test's end.
func startRun(t *testing.T, cfg Config, log logr.Logger) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithTimeout(klog.NewContext(context.Background(), log), 2*time.Minute)
	t.Cleanup(cancel)
	rctx, cancelRun := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- Run(rctx, cfg) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancelRun()
			<-errc
		}
	})
	return ctx, func() {
		cancelRun()
		stopped = true
		if err := waitRun(t, errc); err != nil {
			t.Errorf("Run after cancel: %v", err)
		}
	}
}

// newFakeAgent is an agent of cfg with the fake backend, logging to log.
func newFakeAgent(cfg Config, log logr.Logger) *agent {
	return &agent{
		cfg:      cfg,
		log:      log,
		backends: backend.Registry{"fake": func(backend.Config) (backend.Backend, error) { return &fakeBackend{}, nil }},
		health:   newHealth(log),
		obs:      newObserver(),
	}
}

// startFakeAgent runs an agent of cfg with the fake backend until it is
// ready, and returns what its Run returns and how to stop it; the test's
// cleanup stops it too and waits for Run to return.
func startFakeAgent(ctx context.Context, t *testing.T, cfg Config, log logr.Logger) (errc <-chan error, stop func()) {
	t.Helper()
	a := newFakeAgent(cfg, log)
	rctx, rcancel := context.WithCancel(klog.NewContext(ctx, log))
	c, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		c <- a.run(rctx)
	}()
	t.Cleanup(func() { rcancel(); <-done })
	err := cluster.Eventually(ctx, 30*time.Second, a.readyErr)
	if err != nil {
		t.Fatalf("agent not ready: %v", err)
	}
	return c, rcancel
}
