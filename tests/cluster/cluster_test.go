package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentd/agentd/internal/nsreap"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sys/unix"
)

// TestCluster checks the harness's wiring, without agentd:
//
//	sw: br0 ──┬── h1 198.18.0.1 ── cni0 10.244.1.1/24 ── h1c1 10.244.1.2
//	          ├── h2 198.18.0.2 ── cni0 10.244.2.1/24 ── h2c1 10.244.2.2
//	          ├── h3 198.18.0.3 (vx0: a hand-made vxlan device for the dumps)
//	          ├── h4 198.18.0.4 (added later)
//	          └── etcd 198.18.0.254
//
// The routes between the container subnets are added by hand (host-gw
// style), so a container ping across hosts proves the underlay, the
// containers and the hosts' forwarding. Then it closes the cluster and checks
// that nothing is left.
func TestCluster(t *testing.T) {
	ctx := context.Background()
	rootNS := threadNetns(t)
	start := time.Now()
	c := Start(t, Options{Hosts: 3})
	t.Logf("3 hosts + etcd ready in %v", time.Since(start).Round(time.Millisecond))
	h1, h2, h3 := c.Host(1), c.Host(2), c.Host(3)
	if h1.IP != netip.MustParseAddr("198.18.0.1") || h3.IP != netip.MustParseAddr("198.18.0.3") || h1.Short != "h1" {
		t.Fatalf("hosts: %v %v %v", h1.IP, h3.IP, h1.Short)
	}

	t.Run("underlay", func(t *testing.T) {
		for _, dst := range []netip.Addr{h2.IP, h3.IP, etcdIP} {
			mustPing(t, h1.Namespace, dst, 3)
		}
		addrs, err := h2.Addrs("eth0")
		if err != nil || len(addrs) == 0 || addrs[0] != netip.MustParsePrefix("198.18.0.2/24") {
			t.Errorf("h2 eth0 addresses = %v, %v", addrs, err)
		}
		l, err := h2.LinkByName("eth0")
		if err != nil || l.Attrs().MTU != 1500 || l.Attrs().HardwareAddr.String() != "02:c6:12:00:00:02" {
			t.Errorf("h2 eth0: %v, %v", l, err)
		}
		nb, err := h1.Neighbours("eth0")
		if err != nil || !slices.ContainsFunc(nb, func(s string) bool { return strings.HasPrefix(s, "198.18.0.2 lladdr 02:c6:12:00:00:02 ") }) {
			t.Errorf("h1 eth0 neighbours = %q, %v; want 198.18.0.2 → 02:c6:12:00:00:02", nb, err)
		}
	})

	t.Run("etcd client from the root namespace", func(t *testing.T) {
		cli, err := c.EtcdClient()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := cli.Put(ctx, "/coreos.com/network/config", `{"Network":"10.244.0.0/16"}`); err != nil {
			t.Fatal(err)
		}
		resp, err := cli.Get(ctx, "/coreos.com/network/config")
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"Network":"10.244.0.0/16"}` {
			t.Fatalf("get = %v, %v", resp, err)
		}
		if got := threadNetns(t); got != rootNS {
			t.Errorf("a thread of the test process is in netns %d after dialing, want %d", got, rootNS)
		}
	})

	var c1, c2 *Container
	t.Run("containers and cross-host ping", func(t *testing.T) {
		if err := h1.WriteSubnetEnv("FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.1.1/24", "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=false"); err != nil {
			t.Fatal(err)
		}
		if err := h2.WriteSubnetEnv("FLANNEL_NETWORK=10.244.0.0/16", "FLANNEL_SUBNET=10.244.2.1/24", "FLANNEL_MTU=1450", "FLANNEL_IPMASQ=false"); err != nil {
			t.Fatal(err)
		}
		env, err := h1.SubnetEnv()
		if err != nil || env["FLANNEL_SUBNET"] != "10.244.1.1/24" || env["FLANNEL_MTU"] != "1450" {
			t.Fatalf("h1 SubnetEnv = %v, %v", env, err)
		}
		if _, err := h3.SubnetEnv(); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("h3 SubnetEnv without a file: %v, want ErrNotExist", err)
		}
		if c1, err = h1.AddContainer(ctx); err != nil {
			t.Fatal(err)
		}
		if c2, err = h2.AddContainer(ctx); err != nil {
			t.Fatal(err)
		}
		if c1.IP() != netip.MustParseAddr("10.244.1.2") || c2.Addr != netip.MustParsePrefix("10.244.2.2/24") || c1.Short != "h1c1" {
			t.Fatalf("containers: %v %v %s", c1.Addr, c2.Addr, c1.Short)
		}
		c1b, err := h1.AddContainer(ctx)
		if err != nil || c1b.IP() != netip.MustParseAddr("10.244.1.3") {
			t.Fatalf("second container on h1: %v, %v", c1b, err)
		}
		if v, err := h1.ReadSysctl("net/ipv4/ip_forward"); err != nil || v != "1" {
			t.Errorf("h1 ip_forward = %q, %v", v, err)
		}
		if v, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); err == nil && c.EtcdNamespace() != nil {
			if w, _ := c.EtcdNamespace().ReadSysctl("net/ipv4/ip_forward"); w != "0" {
				t.Errorf("etcd ns ip_forward = %q, want untouched 0 (root has %q)", w, strings.TrimSpace(string(v)))
			}
		}
		l, err := c1.LinkByName("eth0")
		if err != nil || l.Attrs().MTU != 1450 {
			t.Errorf("h1c1 eth0 MTU: %v, %v", l, err)
		}

		// Same host works through cni0 alone; across hosts needs routes.
		mustPing(t, c1.Namespace, c1b.IP(), 2)
		if _, err := h1.Exec(ctx, "ip", "route", "add", "10.244.2.0/24", "via", "198.18.0.2"); err != nil {
			t.Fatal(err)
		}
		if _, err := h2.Exec(ctx, "ip", "route", "add", "10.244.1.0/24", "via", "198.18.0.1"); err != nil {
			t.Fatal(err)
		}
		r, err := c1.Ping(ctx, c2.IP(), 20, pingAllInterval)
		if err != nil || r.Sent != 20 || r.Received != 20 {
			t.Fatalf("h1c1 → h2c1: %+v, %v", r, err)
		}
		mustPing(t, c2.Namespace, c1b.IP(), 2)

		routes, err := h1.Routes()
		want := []string{
			"10.244.1.0/24 dev cni0 proto kernel scope link src 10.244.1.1",
			"10.244.2.0/24 via 198.18.0.2 dev eth0 proto boot",
			"198.18.0.0/24 dev eth0 proto kernel scope link src 198.18.0.1",
		}
		if err != nil || !slices.Equal(routes, want) {
			t.Errorf("h1 routes:\n%s\nwant:\n%s\n(err %v)", strings.Join(routes, "\n"), strings.Join(want, "\n"), err)
		}
		croutes, err := c1.Routes()
		if err != nil || !slices.Contains(croutes, "default via 10.244.1.1 dev eth0 proto boot") {
			t.Errorf("h1c1 routes: %q, %v", croutes, err)
		}
	})

	t.Run("vxlan dumps", func(t *testing.T) {
		for _, args := range [][]string{
			{"ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "dstport", "8472", "local", "198.18.0.3", "nolearning"},
			{"ip", "link", "set", "vx0", "up"},
			{"ip", "addr", "add", "10.244.3.0/32", "dev", "vx0"},
			{"ip", "neigh", "add", "10.244.2.0", "lladdr", "0a:58:0a:f4:02:00", "dev", "vx0", "nud", "permanent"},
			{"bridge", "fdb", "add", "0a:58:0a:f4:02:00", "dev", "vx0", "dst", "198.18.0.2", "self", "permanent"},
			{"ip", "route", "add", "10.244.2.0/24", "via", "10.244.2.0", "dev", "vx0", "onlink", "proto", "252"},
		} {
			if _, err := h3.Exec(ctx, args[0], args[1:]...); err != nil {
				t.Fatal(err)
			}
		}
		nb, err := h3.Neighbours("vx0")
		if err != nil || !slices.Equal(nb, []string{"10.244.2.0 lladdr 0a:58:0a:f4:02:00 PERMANENT"}) {
			t.Errorf("vx0 neighbours = %q, %v", nb, err)
		}
		fdb, err := h3.FDB("vx0")
		if err != nil || !slices.Contains(fdb, "0a:58:0a:f4:02:00 dst 198.18.0.2 self permanent") {
			t.Errorf("vx0 fdb = %q, %v", fdb, err)
		}
		routes, err := h3.Routes()
		if err != nil || !slices.Contains(routes, "10.244.2.0/24 via 10.244.2.0 dev vx0 proto 252 onlink") {
			t.Errorf("h3 routes = %q, %v", routes, err)
		}
		if err := h3.DeleteLink("vx0"); err != nil {
			t.Fatal(err)
		}
		if _, err := h3.FDB("vx0"); err == nil {
			t.Error("vx0 still there after DeleteLink")
		}
	})

	t.Run("partition from etcd", func(t *testing.T) {
		for range 2 { // idempotent
			if err := h1.PartitionFromEtcd(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if r, err := h1.Ping(ctx, etcdIP, 3, 10*time.Millisecond); err != nil || r.Received != 0 {
			t.Errorf("h1 → etcd while partitioned: %+v, %v; want all lost", r, err)
		}
		mustPing(t, h2.Namespace, etcdIP, 2)
		mustPing(t, h1.Namespace, h2.IP, 2) // only etcd is cut off
		cli, err := c.EtcdClient()
		if err != nil {
			t.Fatal(err)
		}
		getCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if _, err := cli.Get(getCtx, "x"); err != nil {
			t.Errorf("the test's own etcd client is affected by a host's partition: %v", err)
		}
		cancel()
		for range 2 {
			if err := h1.HealPartition(ctx); err != nil {
				t.Fatal(err)
			}
		}
		mustPing(t, h1.Namespace, etcdIP, 2)
	})

	t.Run("pause, stop and restart etcd", func(t *testing.T) {
		cli, err := c.EtcdClient()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, "/k", "v"); err != nil {
			t.Fatal(err)
		}
		if err := c.PauseEtcd(); err != nil {
			t.Fatal(err)
		}
		shortCtx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err = cli.Get(shortCtx, "/k")
		cancel()
		if err == nil {
			t.Error("Get succeeded while etcd was paused")
		}
		if err := c.ResumeEtcd(); err != nil {
			t.Fatal(err)
		}
		mustGet(t, c, "/k", "v")

		pid := c.Etcd().Pid()
		start := time.Now()
		if err := c.StopEtcd(); err != nil {
			t.Fatal(err)
		}
		if code := c.Etcd().ExitCode(); code != 137 {
			t.Errorf("etcd exit code after StopEtcd = %d, want 137 (SIGKILL)", code)
		}
		if err := c.StartEtcd(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("etcd restart took %v", time.Since(start).Round(time.Millisecond))
		if c.Etcd().Pid() == pid {
			t.Error("etcd has the same pid after a restart")
		}
		if err := c.StartEtcd(ctx); err == nil {
			t.Error("StartEtcd while running succeeded")
		}
		mustGet(t, c, "/k", "v") // the data dir survives
		if rev, err := c.CompactEtcd(ctx); err != nil || rev < 2 {
			t.Errorf("CompactEtcd = %d, %v", rev, err)
		}
	})

	t.Run("add a host later", func(t *testing.T) {
		start := time.Now()
		h4, err := c.AddHost(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("AddHost took %v", time.Since(start).Round(time.Microsecond))
		if h4.Index != 4 || h4.IP != netip.MustParseAddr("198.18.0.4") || c.Host(4) != h4 || len(c.Hosts()) != 4 {
			t.Fatalf("h4 = %d %v", h4.Index, h4.IP)
		}
		mustPing(t, h4.Namespace, h1.IP, 2)
		mustPing(t, h4.Namespace, etcdIP, 2)
	})

	t.Run("threads stay in the root namespace", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				for range 20 {
					h1.Do(func() error { return nil })
				}
			})
		}
		for range 200 {
			if got := threadNetns(t); got != rootNS {
				t.Fatalf("a goroutine ran in netns %d, want %d", got, rootNS)
			}
		}
		wg.Wait()
	})

	// A process that escaped its process group (setsid) and the harness's
	// bookkeeping: Close must find and kill it through its namespace.
	if _, err := h2.Exec(ctx, "sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 </dev/null &"); err != nil {
		t.Fatal(err)
	}
	checkCloseLeavesNothing(t, c)
}

// checkCloseLeavesNothing closes c and checks that no namespace with its
// prefix, no process it started and no process in its namespaces is left,
// and that a second Close is harmless.
func checkCloseLeavesNothing(t *testing.T, c *Cluster) {
	t.Helper()
	inodes := map[uint64]bool{}
	c.mu.Lock()
	for _, n := range c.namespaces {
		ino, err := nsInode(n.handle)
		if err != nil {
			t.Fatal(err)
		}
		inodes[ino] = true
	}
	procs := slices.Clone(c.procs)
	c.mu.Unlock()
	if len(nsreap.PIDsIn(inodes)) == 0 {
		t.Fatal("no process in the cluster's namespaces before Close: the check below would prove nothing")
	}

	start := time.Now()
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %v", time.Since(start).Round(time.Millisecond))
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ents, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), c.Prefix()) {
			t.Errorf("namespace %s left after Close", e.Name())
		}
	}
	for _, p := range procs {
		if !p.Exited() {
			t.Errorf("%s (pid %d) not reaped", p.Name, p.Pid())
		}
		if err := unix.Kill(p.Pid(), 0); !errors.Is(err, unix.ESRCH) {
			t.Errorf("%s (pid %d) still exists: %v", p.Name, p.Pid(), err)
		}
	}
	if pids := nsreap.PIDsIn(inodes); len(pids) > 0 {
		t.Errorf("processes %v still in the cluster's namespaces", pids)
	}
	if _, err := os.Stat(c.WorkDir()); !errors.Is(err, os.ErrNotExist) && os.Getenv("AGENTD_CLUSTER_KEEP") != "1" {
		t.Errorf("work dir %s left: %v", c.WorkDir(), err)
	}
	if _, err := c.AddHost(context.Background()); err == nil {
		t.Error("AddHost after Close succeeded")
	}
}

// TestAgentProcess drives the agent handling with a stand-in agentd (this
// test binary, see fakeAgent): default flags and overrides, readiness from
// inside the host's namespace, subnet.env, Stop's exit code, Kill, restarts
// appending to one log.
func TestAgentProcess(t *testing.T) {
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := Start(t, Options{Hosts: 2, NoEtcd: true, AgentdBin: exe, AgentEnv: []string{fakeAgentEnv + "=1"}})
	h := c.Host(2)

	if ok, err := h.Ready(ctx); ok || err == nil {
		t.Errorf("Ready with no agent = %v, %v; want false and an error", ok, err)
	}
	a, err := h.StartAgent(ctx, "--iface=eth9", "--fake-subnet=10.244.7.1/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := h.StartAgent(ctx); err == nil {
		t.Error("a second StartAgent while the first runs succeeded")
	}
	if h.Agent() != a || a.Pid() <= 0 {
		t.Errorf("Agent() = %v, want %v", h.Agent(), a)
	}
	env, err := h.SubnetEnv()
	if err != nil || env["FLANNEL_SUBNET"] != "10.244.7.1/24" {
		t.Fatalf("SubnetEnv = %v, %v", env, err)
	}
	ct, err := h.AddContainer(ctx)
	if err != nil || ct.IP() != netip.MustParseAddr("10.244.7.2") || ct.MTU != 1450 {
		t.Fatalf("AddContainer = %v, %v", ct, err)
	}
	mustPing(t, ct.Namespace, netip.MustParseAddr("10.244.7.1"), 2)
	// The agent's health server is only reachable inside its host.
	if _, err := c.Host(1).Dial(ctx, "tcp", h.HealthzAddr()); err != nil {
		t.Errorf("h1 cannot reach h2's health port over the underlay: %v", err)
	}

	code, err := a.Stop()
	if err != nil || code != 7 {
		t.Errorf("Stop = %d, %v; want the fake's exit code 7", code, err)
	}
	if _, err := h.Ready(ctx); err == nil {
		t.Error("Ready answered after the agent stopped")
	}

	a2, err := h.StartAgent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a2.Pause(); err != nil {
		t.Fatal(err)
	}
	if code := a2.Kill(); code != 137 {
		t.Errorf("Kill = %d, want 137", code)
	}
	if code, err := a2.Wait(ctx); code != 137 || err != nil {
		t.Errorf("Wait after Kill = %d, %v", code, err)
	}

	log, err := h.AgentLog()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(log, "=== "); n != 2 {
		t.Errorf("agent log has %d start lines, want 2 (appended across restarts):\n%s", n, log)
	}
	first, _, _ := strings.Cut(log, "fake agent: SIGTERM")
	for _, want := range []string{
		"--etcd-endpoints=http://198.18.0.254:2379",
		"--iface=eth9",
		"--subnet-file=" + h.SubnetFile(),
		"--state-dir=" + h.StateDir(),
		"--healthz-addr=198.18.0.2:8471",
		"-v=2",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first agent's args lack %s:\n%s", want, first)
		}
	}
	if strings.Contains(first, "--iface=eth0") {
		t.Errorf("--iface=eth9 did not replace the default --iface=eth0:\n%s", first)
	}
}

// TestAgentExitUnwatched: an agent that exits by itself while the test
// never asks about its end is what Start's cleanup fails the test for
// (unwatchedExits); one the test stopped, or whose exit code it read, is
// not. The cluster is made with New, so this test's own cleanup does not
// fail it.
func TestAgentExitUnwatched(t *testing.T) {
	RequireRoot(t)
	ctx := context.Background()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(ctx, Options{Hosts: 2, NoEtcd: true, AgentdBin: exe, AgentEnv: []string{fakeAgentEnv + "=1"}, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	crashed, err := c.Host(1).StartAgent(ctx, "--fake-exit=5")
	if err != nil {
		t.Fatal(err)
	}
	stopped, err := c.Host(2).StartAgent(ctx, "--fake-subnet=10.244.7.1/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Host(2).WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := stopped.Stop(); err != nil {
		t.Fatal(err)
	}
	// Ready, waited for as most tests do, and then ended by something
	// other than the test (the fake exits 7 on a SIGTERM the harness did
	// not send): WaitReady looked at whether it had exited, not at an end.
	later, err := c.Host(2).StartAgent(ctx, "--fake-subnet=10.244.7.1/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Host(2).WaitReady(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(later.Pid(), unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := Eventually(ctx, 10*time.Second, func() error {
		if !crashed.hasExited() || !later.hasExited() {
			return errors.New("h1's or h2's agent still runs")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	got := c.unwatchedExits()
	if len(got) != 2 || got[0] != crashed.Process || got[0].exitCode() != 5 || got[1] != later.Process || got[1].exitCode() != 7 {
		t.Fatalf("unwatchedExits = %v, want h1's agent, exited 5, and h2's second, exited 7", got)
	}
	if code := crashed.ExitCode(); code != 5 {
		t.Errorf("ExitCode = %d, want 5", code)
	}
	if code := later.ExitCode(); code != 7 {
		t.Errorf("ExitCode = %d, want 7", code)
	}
	if got := c.unwatchedExits(); len(got) != 0 {
		t.Errorf("unwatchedExits after ExitCode = %v, want none", got)
	}
}

// TestEtcdTLS runs etcd with server-only and with mutual TLS and checks the
// test's client and the flags agents get.
func TestEtcdTLS(t *testing.T) {
	for _, mutual := range []bool{false, true} {
		t.Run(fmt.Sprintf("mutual=%v", mutual), func(t *testing.T) {
			c := Start(t, Options{Hosts: 1, EtcdTLS: &EtcdTLS{ClientCertAuth: mutual}})
			if c.EtcdEndpoint() != "https://198.18.0.254:2379" {
				t.Errorf("endpoint %s", c.EtcdEndpoint())
			}
			mustPut(t, c, "/tls", "yes")
			mustGet(t, c, "/tls", "yes")
			args := strings.Join(c.Host(1).AgentArgs(), " ")
			ca, cert, key := c.EtcdTLSFiles()
			if !strings.Contains(args, "--etcd-endpoints=https://198.18.0.254:2379") || !strings.Contains(args, "--etcd-cafile="+ca) {
				t.Errorf("agent args %q lack the https endpoint or --etcd-cafile", args)
			}
			hasCert := strings.Contains(args, "--etcd-certfile="+cert) && strings.Contains(args, "--etcd-keyfile="+key)
			if hasCert != mutual || (cert != "") != mutual {
				t.Errorf("mutual=%v but agent args are %q", mutual, args)
			}
			if mutual {
				cfg := c.EtcdClientConfig()
				cfg.TLS.Certificates = nil
				if err := tryGet(cfg); err == nil {
					t.Error("etcd accepted a client without a certificate")
				}
			}
			cfg := c.EtcdClientConfig()
			cfg.TLS = nil
			cfg.Endpoints = []string{"http://198.18.0.254:2379"}
			if err := tryGet(cfg); err == nil {
				t.Error("etcd answered plain HTTP/2 on its TLS port")
			}
		})
	}
}

// TestUseDuringClose uses a namespace while the cluster closes, as a closed
// gRPC client's reconnects (Dial) and a check left running by a failed test
// (Routes, over the netlink handle) can: no call may use the namespace's
// handles once release has closed them, and every call after that fails with
// errReleased. The old code failed: under -race a call raced with release on
// the handle, reached a closed or reused descriptor, or called the nil
// netlink handle. The dials are UDP to the namespace's own loopback:
// connect() sends no packet.
func TestUseDuringClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		use  func(*Namespace) error
	}{
		{"dial", func(ns *Namespace) error {
			conn, err := ns.Dial(context.Background(), "udp", "127.0.0.1:9")
			if err == nil {
				conn.Close()
			}
			return err
		}},
		{"netlink", func(ns *Namespace) error {
			_, err := ns.Routes()
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Start(t, Options{NoEtcd: true})
			ns, err := c.AddNamespace(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			used := make(chan struct{})
			last := make(chan error, 1)
			go func() {
				for n := 0; ; n++ {
					if err := tc.use(ns); err != nil {
						last <- err
						return
					}
					if n == 10 {
						close(used)
					}
				}
			}()
			select {
			case <-used:
			case err := <-last:
				t.Fatalf("%s before Close: %v", tc.name, err)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-last:
				if !errors.Is(err, errReleased) {
					t.Fatalf("%s during Close failed with %v, want %v", tc.name, err, errReleased)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s still works 10 s after Close", tc.name)
			}
		})
	}
}

// TestManyHosts adds 50 hosts, 10 at a time, as the join-race test will.
func TestManyHosts(t *testing.T) {
	if testing.Short() && os.Getenv("CI") == "" {
		t.Skip("skipping under -short: a scale test (50 hosts, a namespace each); CI (CI set) runs it even with -short")
	}
	ctx := context.Background()
	c := Start(t, Options{NoEtcd: true})
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 10 {
		wg.Go(func() {
			for range 5 {
				if _, err := c.AddHost(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	d := time.Since(start)
	t.Logf("50 hosts added in %v (%v per host)", d.Round(time.Millisecond), (d / 50).Round(time.Microsecond))
	if n := len(c.Hosts()); n != 50 {
		t.Fatalf("%d hosts", n)
	}
	mustPing(t, c.Host(50).Namespace, c.Host(1).IP, 2)
	mustPing(t, c.Host(17).Namespace, c.Host(33).IP, 2)
	start = time.Now()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("closed 50 hosts in %v", time.Since(start).Round(time.Millisecond))
}

// tryGet makes one Get with a fresh client of cfg.
func tryGet(cfg clientv3.Config) error {
	cli, err := clientv3.New(cfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err = cli.Get(ctx, "x")
	return err
}

// pingAllInterval is the interval of pings that must all be answered. A
// count-bounded ping waits for its last answer only max(2×the longest round
// trip so far, one interval) after sending it (iputils): at 10 ms, one
// reply late on a loaded machine would count as lost.
const pingAllInterval = 200 * time.Millisecond

func mustPing(t *testing.T, from *Namespace, dst netip.Addr, n int) {
	t.Helper()
	r, err := from.Ping(context.Background(), dst, n, pingAllInterval)
	if err != nil || r.Received != n {
		t.Errorf("%s → %s: %+v, %v; want %d replies", from.Short, dst, r, err, n)
	}
}

func mustPut(t *testing.T, c *Cluster, k, v string) {
	t.Helper()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, k, v); err != nil {
		t.Fatal(err)
	}
}

// mustGet waits (etcd may just have restarted) until k has value v.
func mustGet(t *testing.T, c *Cluster, k, v string) {
	t.Helper()
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	err = Eventually(context.Background(), 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		resp, err := cli.Get(ctx, k)
		if err != nil {
			return err
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != v {
			return fmt.Errorf("%s = %v, want %q", k, resp.Kvs, v)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// threadNetns is the network namespace inode of the calling thread.
func threadNetns(t *testing.T) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}
