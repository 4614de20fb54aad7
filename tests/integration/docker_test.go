package integration

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/sdunit"
	"golang.org/x/sys/unix"
)

// dockerUnit is Debian's docker.service, which the drop-in modifies.
const dockerUnit = "/lib/systemd/system/docker.service"

// dockerTrustKey is where dockerd 20.10 keeps its identity key, whatever its
// --data-root (there is no flag to move it).
const dockerTrustKey = "/etc/docker/key.json"

// removeDockerTrustKeyAfter removes dockerTrustKey when t ends if it was
// not there before: the dockerds t starts make it.
func removeDockerTrustKeyAfter(t *testing.T) {
	keyExisted := fileExists(dockerTrustKey)
	t.Cleanup(func() {
		if !keyExisted {
			os.Remove(dockerTrustKey) // made by the dockerds this test started
		}
	})
}

// dockerCluster is what a test of real dockerds starts from: a cluster of
// agents, Debian's dockerd and docker commands, the cluster's build of
// agentd-docker-opts, and a busybox root file system to import as an image.
type dockerCluster struct {
	c                                      *cluster.Cluster
	dockerdBin, dockerBin, optsBin, rootfs string
}

// newDockerCluster, as root, with docker.io's dockerd, docker and
// docker.service and busybox-static's busybox, starts a cluster of hosts
// hosts whose agents run with backend and agentArgs.
func newDockerCluster(t *testing.T, backend string, hosts int, agentArgs ...string) *dockerCluster {
	t.Helper()
	cluster.RequireRoot(t)
	dockerdBin := requireTool(t, "dockerd", "docker.io", "/usr/sbin/dockerd")
	// Debian's client matches the daemon; a newer one in /usr/local/bin works
	// too but is not what the package installs.
	dockerBin := requireTool(t, "docker", "docker.io", "/usr/bin/docker")
	requireFile(t, dockerUnit, "docker.io")
	busybox := requireTool(t, "busybox", "busybox-static", "/bin/busybox")
	requireStatic(t, busybox)

	c := agentCluster(t, backend, hosts, agentArgs...)
	optsBin, err := c.Binary(context.Background(), "agentd-docker-opts")
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := writeBusyboxRootfs(rootfs, busybox); err != nil {
		t.Fatal(err)
	}
	return &dockerCluster{c: c, dockerdBin: dockerdBin, dockerBin: dockerBin, optsBin: optsBin, rootfs: rootfs}
}

// TestDocker runs a real dockerd on each of two hosts, started the way
// docker.service with dist/systemd/docker.service.d/agentd.conf starts it,
// and checks that containers on different hosts reach each other:
//
//	h1: agentd ── subnet.env ── agentd-docker-opts ── dockerd $DOCKER_NETWORK_OPTIONS (--bip=… --mtu=… --ip-masq=…)
//	      docker0 10.244.A.1 ── c1 10.244.A.2 ─┐
//	h2: (same)                                 │ vxlan or host-gw, through dockerd's FORWARD DROP policy
//	      docker0 10.244.B.1 ── c2 10.244.B.2 ─┘
//
// With vxlan the agents masquerade (--ip-masq, so dockerd gets
// --ip-masq=false); with host-gw they do not (dockerd masquerades).
func TestDocker(t *testing.T) {
	removeDockerTrustKeyAfter(t)
	for _, tc := range []struct {
		backend string
		ipMasq  bool
	}{{"vxlan", true}, {"host-gw", false}} {
		t.Run(tc.backend, func(t *testing.T) { testDocker(t, tc.backend, tc.ipMasq) })
	}
}

func testDocker(t *testing.T, backend string, ipMasq bool) {
	var args []string
	if ipMasq {
		args = append(args, "--ip-masq")
	}
	dc := newDockerCluster(t, backend, 2, args...)
	c := dc.c
	ctx := context.Background()

	hosts := c.Hosts()
	ds := make([]*dockerd, len(hosts))
	errs := make(chan error, len(hosts))
	for i, h := range hosts {
		go func() {
			var err error
			ds[i], err = startDockerd(t, c, h, dc.dockerdBin, dc.dockerBin, dc.optsBin, "{}\n")
			errs <- err
		}()
	}
	for range hosts {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}

	var ips []netip.Addr
	for _, d := range ds {
		start := time.Now()
		if _, err := d.docker(ctx, "import", "--change", `CMD ["/bin/sleep","1000000"]`, dc.rootfs, "agentd-busybox:test"); err != nil {
			t.Fatal(err)
		}
		imported := time.Since(start)
		id, addr := d.run(t, ctx, "--name", "c-"+d.h.Short)
		ips = append(ips, addr)
		t.Logf("%s: image imported in %v, container %.12s (%s) running %v after import", d.h, imported.Round(time.Millisecond), id, addr, (time.Since(start) - imported).Round(time.Millisecond))
		d.checkBridge(t, ctx, addr, ipMasq)
	}

	// Containers on different hosts reach each other.
	var err error
	for i, d := range ds {
		peer := ips[1-i]
		var r pingResult
		err := cluster.Eventually(ctx, 15*time.Second, func() error {
			r, err = d.ping(ctx, d.containers[0], peer, 1)
			if err == nil && r.received != 1 {
				err = fmt.Errorf("%d/%d replies", r.received, r.sent)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s container -> %s: %v", d.h, peer, err)
		}
		if r, err = d.ping(ctx, d.containers[0], peer, 5); err != nil || r.received != 5 {
			t.Fatalf("%s container -> %s: %d/%d replies (%v)", d.h, peer, r.received, r.sent, err)
		}
		t.Logf("%s container %s -> %s: %d/%d replies", d.h, ips[i], peer, r.received, r.sent)
	}

	// The traffic crossed dockerd's DROP policy because of agentd's rule.
	// With h2's agent stopped (it leaves routes and rules in place) and the
	// jump to AGENTD-FWD removed, h1's container cannot reach h2's; the
	// restarted agent puts the jump back and the ping gets through.
	d1, d2 := ds[0], ds[1]
	before := fwdAccepted(t, ctx, d2.h)
	if _, err := d2.h.Agent().Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.h.Exec(ctx, "iptables", "-w", "5", "-D", "FORWARD", "-m", "comment", "--comment", "agentd forward", "-j", "AGENTD-FWD"); err != nil {
		t.Fatal(err)
	}
	// dockerd made DOCKER-USER, so agentd jumps from there too (for
	// cluster-to-cluster traffic, ahead of Docker 28's drops).
	network := readEnv(t, d2.h).Network.String()
	if _, err := d2.h.Exec(ctx, "iptables", "-w", "5", "-D", "DOCKER-USER", "-s", network, "-d", network, "-m", "comment", "--comment", "agentd forward", "-j", "AGENTD-FWD"); err != nil {
		t.Fatal(err)
	}
	blocked, err := d1.ping(ctx, d1.containers[0], ips[1], 2)
	if err != nil {
		t.Fatal(err)
	}
	if blocked.received != 0 {
		t.Errorf("without agentd's FORWARD jump on %s, %d/%d pings got through dockerd's DROP policy", d2.h, blocked.received, blocked.sent)
	}
	restart := time.Now()
	if _, err := d2.h.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d2.h.WaitReady(ctx, readyWithin); err != nil {
		t.Fatal(err)
	}
	if !hasRule(ctx, d2.h, "FORWARD", `-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD`) {
		t.Fatalf("%s: the restarted agent is ready but the FORWARD jump to AGENTD-FWD is missing", d2.h)
	}
	if !hasRule(ctx, d2.h, "DOCKER-USER", `-A DOCKER-USER -s `+network+` -d `+network+` -m comment --comment "agentd forward" -j AGENTD-FWD`) {
		t.Fatalf("%s: the restarted agent is ready but the DOCKER-USER jump to AGENTD-FWD is missing", d2.h)
	}
	ready := time.Since(restart)
	r, err := d1.ping(ctx, d1.containers[0], ips[1], 3)
	if err != nil || r.received != 3 {
		t.Fatalf("after agentd restored its rule: %d/%d replies (%v)", r.received, r.sent, err)
	}
	after := fwdAccepted(t, ctx, d2.h)
	if after <= before {
		t.Errorf("%s: AGENTD-FWD accepted %d packets before and %d after the pings", d2.h, before, after)
	}
	t.Logf("%s: FORWARD policy DROP; agent stopped and jumps to AGENTD-FWD removed: %d/%d replies; agent restarted, ready with the jump back in %v: %d/%d replies; AGENTD-FWD accepted %d packets (first of each new flow; the rest match dockerd's ESTABLISHED rule)",
		d2.h, blocked.received, blocked.sent, ready.Round(time.Millisecond), r.received, r.sent, after-before)
}

// TestDockerSubnetMove: what an operator sees when agentd, restarted, leases
// another subnet while dockerd runs (this host's lease expired while agentd
// was down and another host took the subnet), and that restarting dockerd,
// which the drop-in gives the new subnet.env, is the fix; with
// "live-restore" in daemon.json only once no container runs:
//
//	h1: agentd stopped; 10.244.A.0/24 taken by 198.18.0.9 (no such host here); agentd started: MOVING TO ANOTHER SUBNET, 10.244.B.1/24
//	    docker0 10.244.A.1 (dockerd untouched) ── c1 10.244.A.2 ──✗── c2 on h2 (h2 routes A to 198.18.0.9)
//	    live-restore: dockerd restarted with c1 running: docker0 stays 10.244.A.1, a new container gets 10.244.A.3
//	    dockerd restarted (live-restore: after docker stop): docker0 10.244.B.1 only ── c1' 10.244.B.2 ──✓── c2
func TestDockerSubnetMove(t *testing.T) {
	removeDockerTrustKeyAfter(t)
	t.Run("restart", func(t *testing.T) { testDockerSubnetMove(t, false) })
	t.Run("live-restore", func(t *testing.T) { testDockerSubnetMove(t, true) })
}

func testDockerSubnetMove(t *testing.T, liveRestore bool) {
	dc := newDockerCluster(t, "vxlan", 2, "--ip-masq")
	c := dc.c
	ctx := context.Background()

	daemonJSON := "{}\n"
	if liveRestore {
		daemonJSON = `{"live-restore": true}`
	}
	h1, h2 := c.Host(1), c.Host(2)
	start := func(h *cluster.Host) *dockerd {
		t.Helper()
		d, err := startDockerd(t, c, h, dc.dockerdBin, dc.dockerBin, dc.optsBin, daemonJSON)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	run := func(d *dockerd) netip.Addr {
		t.Helper()
		if _, err := d.docker(ctx, "import", "--change", `CMD ["/bin/sleep","1000000"]`, dc.rootfs, "agentd-busybox:test"); err != nil {
			t.Fatal(err)
		}
		// sleep, as PID 1, ignores SIGTERM: a dockerd that stops it
		// (no live-restore) would wait its default 10 s before killing it.
		_, addr := d.run(t, ctx, "--stop-timeout=1")
		return addr
	}
	// docker0's IPv4 addresses (the kernel gives it an IPv6 link-local one).
	docker0 := func() []netip.Prefix {
		t.Helper()
		addrs, err := h1.Addrs("docker0")
		if err != nil {
			t.Fatalf("%s: docker0: %v", h1, err)
		}
		return slices.DeleteFunc(addrs, func(p netip.Prefix) bool { return !p.Addr().Is4() })
	}
	// restart stops d's dockerd, leaving its containers to live-restore if
	// it is on, and starts another on the same directories.
	restart := func(d *dockerd) *dockerd {
		t.Helper()
		if _, err := d.proc.Stop(); err != nil {
			t.Fatal(err)
		}
		nd := start(d.h)
		nd.containers = d.containers
		d.containers = nil
		return nd
	}
	reaches := func(d *dockerd, dst netip.Addr) {
		t.Helper()
		err := cluster.Eventually(ctx, 15*time.Second, func() error {
			r, err := d.ping(ctx, d.containers[len(d.containers)-1], dst, 1)
			if err == nil && r.received != 1 {
				err = fmt.Errorf("%d/%d replies", r.received, r.sent)
			}
			return err
		})
		if err != nil {
			t.Fatalf("%s container -> %s: %v", d.h, dst, err)
		}
	}
	d1, d2 := start(h1), start(h2)
	c1, c2 := run(d1), run(d2)
	reaches(d1, c2)
	old := readEnv(t, h1).Subnet

	// h1's agent stops (lease and datapath stay); its subnet goes to another
	// host, as when the lease expires and another host acquires it.
	if _, err := h1.Agent().Stop(); err != nil {
		t.Fatal(err)
	}
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	key := fmt.Sprintf("/coreos.com/network/subnets/%s-%d", old.Masked().Addr(), old.Bits())
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, key, `{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:c6:12:00:09"}}`); err != nil {
		t.Fatal(err)
	}
	if _, err := h1.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h1.WaitReady(ctx, readyWithin); err != nil {
		t.Fatal(err)
	}
	moved := readEnv(t, h1).Subnet
	if moved == old {
		t.Fatalf("%s: subnet.env still names %s after its key went to another host", h1, old)
	}

	// What the operator sees with dockerd left running: agentd says it
	// moved and which peer it cannot program, docker0 keeps the old
	// address, and h1's containers reach no other host.
	peerLine := fmt.Sprintf("subnet %s holds %s, an address of this host (docker0)", old.Masked(), old.Addr())
	err = cluster.Eventually(ctx, 5*time.Second, func() error {
		log, err := h1.AgentLog()
		if err == nil && (!strings.Contains(log, "MOVING TO ANOTHER SUBNET") || !strings.Contains(log, peerLine)) {
			err = fmt.Errorf("no MOVING TO ANOTHER SUBNET and %q in its log", peerLine)
		}
		return err
	})
	if err != nil {
		t.Fatalf("%s: %v", h1, err)
	}
	if addrs := docker0(); !slices.Equal(addrs, []netip.Prefix{old}) {
		t.Errorf("%s: docker0 %v while dockerd runs, want the old %s (dockerd reads subnet.env only at its start)", h1, addrs, old)
	}
	cut, err := d1.ping(ctx, d1.containers[0], c2, 2)
	if err != nil {
		t.Fatal(err)
	}
	if cut.received != 0 {
		t.Errorf("%s container %s -> %s: %d/%d replies with %s now another host's", h1, c1, c2, cut.received, cut.sent, old.Masked())
	}
	t.Logf("%s: agentd moved %s -> %s; dockerd untouched: docker0 %v, container %s -> %s: %d/%d replies; agentd: %q",
		h1, old, moved, docker0(), c1, c2, cut.received, cut.sent, peerLine)

	if liveRestore {
		// With live-restore the restarted dockerd keeps c1 running and the
		// bridge network with it: docker0 and new containers stay in the
		// old subnet, although dockerd was given the new --bip.
		d1 = restart(d1)
		warning := fmt.Sprintf("agentd-docker-opts: warning: docker0 has %s, not this host's subnet %s, and 1 interface attached", old, moved)
		if !strings.Contains(d1.pre, warning) {
			t.Errorf("%s: live-restore, dockerd restarted with a container running: the drop-in's ExecStartPre printed %q, want %q…", h1, d1.pre, warning)
		}
		addrs := docker0()
		stray := run(d1)
		if !slices.Equal(addrs, []netip.Prefix{old}) || !old.Masked().Contains(stray) {
			t.Errorf("%s: live-restore, dockerd restarted with a container running: docker0 %v, a new container %s; want both still in the old %s (dockerd's behaviour changed: update README)", h1, addrs, stray, old.Masked())
		}
		t.Logf("%s: live-restore, dockerd restarted with container %s running: docker0 %v, a new container gets %s (dockerd was given --bip=%s); ExecStartPre: %s", h1, c1, addrs, stray, moved, d1.pre)
		if out, err := d1.docker(ctx, append([]string{"stop"}, d1.containers...)...); err != nil {
			t.Fatalf("%s: docker stop: %v: %s", h1, err, out)
		}
	}

	// The fix: restart dockerd (systemctl restart docker; with
	// live-restore, the containers stopped first). The drop-in gives it the
	// new subnet.env; dockerd moves docker0 to it.
	begin := time.Now()
	d1 = restart(d1)
	if strings.Contains(d1.pre, "warning") {
		t.Errorf("%s: dockerd restarted with no container running: the drop-in's ExecStartPre printed %q", h1, d1.pre)
	}
	addrs := docker0()
	if !slices.Equal(addrs, []netip.Prefix{moved}) {
		t.Errorf("%s: docker0 %v after dockerd restarted, want only the new %s", h1, addrs, moved)
	}
	c1 = run(d1)
	if !moved.Masked().Contains(c1) {
		t.Errorf("%s: new container %s outside the new subnet %s", h1, c1, moved.Masked())
	}
	reaches(d1, c2)
	r, err := d1.ping(ctx, d1.containers[len(d1.containers)-1], c2, 5)
	if err != nil || r.received != 5 {
		t.Fatalf("%s container %s -> %s after dockerd restarted: %d/%d replies (%v)", h1, c1, c2, r.received, r.sent, err)
	}
	// The peer that holds the old subnet is programmed once docker0 lets go.
	err = cluster.Eventually(ctx, 5*time.Second, func() error {
		out, err := h1.Exec(ctx, "ip", "route", "show", old.Masked().String())
		if err == nil && !strings.Contains(string(out), "flannel.1") {
			err = fmt.Errorf("no route: %q", out)
		}
		return err
	})
	if err != nil {
		t.Errorf("%s: route to %s (198.18.0.9's now) after dockerd restarted: %v", h1, old.Masked(), err)
	}
	t.Logf("%s: dockerd restarted: docker0 %v, container %s -> %s: %d/%d replies, %v after the restart began (stop, start, image import, container, 5 pings 1 s apart); route to %s via flannel.1",
		h1, addrs, c1, c2, r.received, r.sent, time.Since(begin).Round(time.Millisecond), old.Masked())
}

// TestDockerDropInBadSubnetEnv runs the drop-in's ExecStartPre on a missing
// and on a half-written subnet.env. A missing one is what dockerd meets at
// boot while agentd still waits for etcd: the command waits (--wait) and
// dockerd gets agentd's --bip once the file appears. A half-written one
// fails at once naming the file and the key, so systemd never starts dockerd
// with a wrong or empty --bip. So does a daemon.json that sets bip, checked
// where DOCKER_OPTS's --config-file puts it: the test's own file, never the
// machine's /etc/docker/daemon.json. The commands run in an empty network
// namespace, where agentd-docker-opts finds no docker0, not the machine's.
func TestDockerDropInBadSubnetEnv(t *testing.T) {
	requireFile(t, dockerUnit, "docker.io")
	cluster.RequireRoot(t) // the drop-in's commands run in a network namespace of their own
	ctx := context.Background()
	optsBin := filepath.Join(t.TempDir(), "agentd-docker-opts")
	if out, err := command(ctx, nil, "go", "build", "-o", optsBin, "../../run/agentd-docker-opts"); err != nil {
		t.Fatal(err, out)
	}
	dir := t.TempDir()
	subnetEnv := filepath.Join(dir, "subnet.env")
	dockerEnv := filepath.Join(dir, "docker-network.env")
	defaults, err := dockerDefaults(dir, "{}\n")
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{
		"/usr/local/bin/agentd-docker-opts": optsBin,
		"/run/flannel/subnet.env":           subnetEnv,
		"/run/flannel/docker-network.env":   dockerEnv,
		"/etc/default/docker":               defaults,
	}
	// The drop-in's commands run in a network namespace of their own,
	// empty: agentd-docker-opts reads docker0, and the machine's is not
	// the test's to read.
	machine, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	netnsCmd := func(ctx context.Context, argv []string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		return cmd
	}
	inNetns := func(ctx context.Context, argv []string) (string, error) {
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		out, err := netnsCmd(ctx, argv).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out)
		}
		return string(out), nil
	}
	// Missing: the ExecStartPre child, agentd-docker-opts --wait, has not
	// exited once it has been running for more than two of its polls, then
	// is done once the file is written as agentd writes it. Its looks for
	// the file leave no trace outside it (a failed open is not an inotify
	// event), so this checks that it waits rather than counting looks;
	// run/agentd-docker-opts's TestWaitAndOutput counts them through its
	// poll hook.
	poll := dockerOptsPollInterval(t)
	started := make(chan time.Time, 1)
	exited := make(chan struct{})
	waitRun := func(ctx context.Context, argv []string) (string, error) {
		if argv[0] != optsBin {
			return inNetns(ctx, argv)
		}
		cmd := netnsCmd(ctx, argv)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			return "", err
		}
		started <- time.Now()
		if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", cmd.Process.Pid)); err == nil && ns == machine {
			t.Errorf("agentd-docker-opts runs in the machine's network namespace (%s), where it reads docker0", ns)
		}
		err := cmd.Wait()
		close(exited)
		if err != nil {
			return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, out.String())
		}
		return out.String(), nil
	}
	waitCtx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	var argv []string
	go func() {
		var err error
		argv, err = dockerCommand(waitCtx, waitRun, paths)
		done <- err
	}()
	var start time.Time
	select {
	case start = <-started:
	case err := <-done:
		t.Fatalf("missing subnet.env: dockerd %q, error %v without starting agentd-docker-opts; want the drop-in's ExecStartPre to run it and wait", argv, err)
	case <-time.After(30 * time.Second):
		t.Fatal("missing subnet.env: the drop-in's ExecStartPre did not start agentd-docker-opts within 30 s")
	}
	select {
	case <-exited:
		t.Fatalf("missing subnet.env: the drop-in's ExecStartPre exited %v after it started (%v), want it to wait for agentd (polls every %v)", time.Since(start).Round(time.Millisecond), <-done, poll)
	case <-time.After(time.Until(start.Add(2*poll + poll/2))):
	}
	t.Logf("missing subnet.env: agentd-docker-opts --wait still waiting %v after it started (it looks every %v)", time.Since(start).Round(time.Millisecond), poll)
	want := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	if err := subnetenv.Write(subnetEnv, want); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil || !slices.Contains(argv, "--bip=10.244.5.1/24") || !slices.Contains(argv, "--mtu=1450") {
			t.Errorf("missing subnet.env, written later: dockerd %q, error %v; want --bip=10.244.5.1/24 --mtu=1450", argv, err)
		} else {
			t.Logf("missing subnet.env: ExecStartPre waited, then dockerd %q", argv)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("missing subnet.env: ExecStartPre still waiting 30 s after the file was written")
	}
	os.Remove(dockerEnv)

	for _, tc := range []struct {
		name, content, want string
		daemonJSON          string // the file DOCKER_OPTS's --config-file names
	}{
		{"half-written subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\n", "subnet.env " + subnetEnv + ": FLANNEL_MTU missing", "{}\n"},
		{"no subnet in subnet.env", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_MTU=1450\n", "subnet.env " + subnetEnv + ": FLANNEL_SUBNET missing", "{}\n"},
		{"daemon.json with bip", "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\n", filepath.Join(dir, "daemon.json") + ` sets "bip"`, `{"bip": "172.17.0.1/16"}`},
	} {
		os.Remove(subnetEnv)
		if tc.content != "" {
			if err := os.WriteFile(subnetEnv, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := dockerDefaults(dir, tc.daemonJSON); err != nil {
			t.Fatal(err)
		}
		argv, err := dockerCommand(ctx, inNetns, paths)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: dockerd %q, error %v; want an error containing %q", tc.name, argv, err, tc.want)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
		if fileExists(dockerEnv) {
			t.Errorf("%s: %s was written", tc.name, dockerEnv)
		}
	}
}

// dockerOptsPollInterval is how often agentd-docker-opts --wait looks for
// subnet.env: pollInterval, read from run/agentd-docker-opts's source so
// that the test follows it.
func dockerOptsPollInterval(t *testing.T) time.Duration {
	t.Helper()
	const src = "../../run/agentd-docker-opts/main.go"
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^const pollInterval = (\d+) \* time\.Millisecond$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s: no const pollInterval = <n> * time.Millisecond", src)
	}
	n, err := strconv.Atoi(string(m[1]))
	if err != nil || n <= 0 {
		t.Fatalf("%s: pollInterval %q", src, m[1])
	}
	return time.Duration(n) * time.Millisecond
}

// dockerd is a dockerd running in a host's namespace.
type dockerd struct {
	h          *cluster.Host
	dir        string // data/, exec/, pid, sock, cli/
	client     string
	cgroup     string // the --cgroup-parent, relative to each hierarchy
	proc       *cluster.Process
	containers []string
	pre        string // what the drop-in's ExecStartPre printed
}

// dockerCommand is docker.service's ExecStart after the drop-in: its
// ExecStartPre has run, and the variables in each command are expanded from
// the EnvironmentFiles as they are when it starts, as systemd would. run
// executes ExecStartPre's commands. paths maps the files the units name to
// the host's copies; /etc/default/docker, when mapped, gives DOCKER_OPTS to
// both commands. Files the units name but paths does not map must be
// optional and are left out: the machine's own docker settings are not the
// test's.
func dockerCommand(ctx context.Context, run func(ctx context.Context, argv []string) (string, error), paths map[string]string) ([]string, error) {
	return dockerUnitCommand(ctx, run, paths, dockerDropIn)
}

// dockerUnitCommand is dockerCommand with docker.service's drop-ins given
// (none: the unit as its package installs it).
func dockerUnitCommand(ctx context.Context, run func(ctx context.Context, argv []string) (string, error), paths map[string]string, dropIns ...string) ([]string, error) {
	u, err := sdunit.Load(dockerUnit, dropIns...)
	if err != nil {
		return nil, err
	}
	rewrite := func(s string) string {
		for from, to := range paths {
			s = strings.ReplaceAll(s, from, to)
		}
		return s
	}
	for _, line := range u.List("Service", "ExecStartPre") {
		env, err := unitEnv(u, paths)
		if err != nil {
			return nil, err
		}
		cmd, err := sdunit.ExpandCommand(rewrite(line), env)
		if err != nil {
			return nil, err
		}
		if _, err := run(ctx, cmd.Argv); err != nil && !cmd.IgnoreFailure {
			return nil, fmt.Errorf("ExecStartPre failed, so systemd would not start dockerd: %w", err)
		}
	}
	env, err := unitEnv(u, paths)
	if err != nil {
		return nil, err
	}
	execs := u.List("Service", "ExecStart")
	if len(execs) != 1 {
		return nil, fmt.Errorf("docker.service has %d ExecStart lines after the drop-in, want 1", len(execs))
	}
	cmd, err := sdunit.ExpandCommand(rewrite(execs[0]), env)
	if err != nil {
		return nil, err
	}
	return cmd.Argv, nil
}

// unitEnv reads u's EnvironmentFiles, mapped by paths as in dockerCommand,
// as systemd does before each command: later files override earlier ones,
// and an optional file that is missing (or not mapped) is skipped.
func unitEnv(u *sdunit.Unit, paths map[string]string) (map[string]string, error) {
	env := map[string]string{}
	for _, f := range u.EnvironmentFiles() {
		p, ok := paths[f.Path]
		if !ok {
			if !f.Optional {
				return nil, fmt.Errorf("EnvironmentFile=%s is required but not provided by the test", f.Path)
			}
			continue
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, os.ErrNotExist) && f.Optional {
			continue
		}
		if err != nil {
			return nil, err
		}
		vars, err := sdunit.ParseEnvironmentFile(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		maps.Copy(env, sdunit.Env(vars))
	}
	return env, nil
}

// dockerDefaults writes, in dir, a daemon.json with content and an
// /etc/default/docker whose DOCKER_OPTS names it with --config-file, and
// returns the latter: with it mapped, the drop-in's ExecStartPre checks the
// test's daemon.json and dockerd reads it, not the machine's
// /etc/docker/daemon.json.
func dockerDefaults(dir, content string) (string, error) {
	daemonJSON := filepath.Join(dir, "daemon.json")
	if err := os.WriteFile(daemonJSON, []byte(content), 0o644); err != nil {
		return "", err
	}
	defaults := filepath.Join(dir, "default-docker")
	return defaults, os.WriteFile(defaults, []byte("DOCKER_OPTS="+strconv.Quote("--config-file="+daemonJSON)+"\n"), 0o644)
}

// startDockerd starts dockerd in h's namespace with the command line
// docker.service would use, its DOCKER_OPTS naming its own configuration
// file (with daemonJSON), minus what ties it to the machine's systemd and
// containerd (-H fd://, --containerd=…: dockerd then runs its own
// containerd), plus its own data and exec roots, pidfile, socket and cgroup
// parent. It waits until the daemon answers and registers a cleanup that
// removes its containers, stops it and removes what it left. The output of
// the drop-in's ExecStartPre is kept in pre.
func startDockerd(t *testing.T, c *cluster.Cluster, h *cluster.Host, dockerdBin, client, optsBin, daemonJSON string) (*dockerd, error) {
	return startDockerdUnit(t, c, h, dockerdBin, client, optsBin, daemonJSON, dockerDropIn)
}

// startDockerdUnit is startDockerd with docker.service's drop-ins given
// (none: the unit as its package installs it).
func startDockerdUnit(t *testing.T, c *cluster.Cluster, h *cluster.Host, dockerdBin, client, optsBin, daemonJSON string, dropIns ...string) (*dockerd, error) {
	ctx := context.Background()
	d := &dockerd{h: h, dir: filepath.Join(h.Dir, "docker"), client: client, cgroup: "agentd-" + c.Prefix() + h.Short}
	if err := os.MkdirAll(filepath.Join(d.dir, "cli"), 0o700); err != nil {
		return nil, err
	}
	defaults, err := dockerDefaults(d.dir, daemonJSON)
	if err != nil {
		return nil, err
	}
	// ip netns exec, not h.Exec: it mounts the namespace's own /sys, where
	// agentd-docker-opts reads docker0's ports, as on a host.
	inHost := func(ctx context.Context, argv []string) (string, error) {
		out, err := command(ctx, nil, "ip", append([]string{"netns", "exec", h.Name}, argv...)...)
		d.pre += out
		return out, err
	}
	argv, err := dockerUnitCommand(ctx, inHost, map[string]string{
		"/usr/local/bin/agentd-docker-opts": optsBin,
		"/run/flannel/subnet.env":           h.SubnetFile(),
		"/run/flannel/docker-network.env":   filepath.Join(h.Dir, "docker-network.env"),
		"/etc/default/docker":               defaults,
	}, dropIns...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	if filepath.Base(argv[0]) != "dockerd" {
		return nil, fmt.Errorf("%s: docker.service runs %q, want dockerd", h, argv[0])
	}
	var args []string
	for i := 1; i < len(argv); i++ {
		switch a := argv[i]; {
		case a == "-H" && i+1 < len(argv) && argv[i+1] == "fd://":
			i++
		case strings.HasPrefix(a, "--containerd="):
		default:
			args = append(args, a)
		}
	}
	args = append(args,
		"--data-root="+filepath.Join(d.dir, "data"),
		"--exec-root="+filepath.Join(d.dir, "exec"),
		"--pidfile="+filepath.Join(d.dir, "pid"),
		"-H", "unix://"+filepath.Join(d.dir, "sock"),
		"--cgroup-parent=/"+d.cgroup,
	)
	t.Logf("%s: dockerd %s", h, strings.Join(args, " "))
	// nsenter --net, not `ip netns exec`: the latter remounts /sys and hides
	// the cgroup hierarchies dockerd needs.
	start := time.Now()
	d.proc, err = h.Start("nsenter", append([]string{"--net=/var/run/netns/" + h.Name, "--", dockerdBin}, args...)...)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { d.stop(t) })
	err = d.proc.Eventually(ctx, 90*time.Second, func() error {
		if d.proc.Exited() {
			return fmt.Errorf("dockerd exited with code %d; see %s", d.proc.ExitCode(), d.proc.LogPath)
		}
		_, err := d.docker(ctx, "version", "--format", "{{.Server.Version}}")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	t.Logf("%s: dockerd answering %v after start", h, time.Since(start).Round(time.Millisecond))
	return d, nil
}

// docker runs the docker client against this daemon.
func (d *dockerd) docker(ctx context.Context, args ...string) (string, error) {
	return command(ctx, []string{"DOCKER_HOST=unix://" + filepath.Join(d.dir, "sock"), "DOCKER_CONFIG=" + filepath.Join(d.dir, "cli")}, d.client, args...)
}

// run starts a container of the imported agentd-busybox:test, with opts
// given to docker run, and returns its id, kept for stop, and its address.
func (d *dockerd) run(t *testing.T, ctx context.Context, opts ...string) (string, netip.Addr) {
	t.Helper()
	args := append(append([]string{"run", "-d", "--pull=never"}, opts...), "agentd-busybox:test")
	id, err := d.docker(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	d.containers = append(d.containers, id)
	ip, err := d.docker(ctx, "inspect", "-f", "{{.NetworkSettings.IPAddress}}", id)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		t.Fatalf("%s: container address %q: %v", d.h, ip, err)
	}
	return id, addr
}

// stop removes the containers this test made (by id), stops dockerd with
// SIGTERM (it stops its containerd and unmounts its layers), then removes by
// pid anything left in its cgroups, its cgroups, any mount left under its
// directory, and the directory.
func (d *dockerd) stop(t *testing.T) {
	ctx := context.Background()
	if len(d.containers) > 0 && !d.proc.Exited() {
		if out, err := d.docker(ctx, append([]string{"rm", "-f"}, d.containers...)...); err != nil {
			t.Errorf("%s: remove containers: %v: %s", d.h, err, out)
		}
	}
	if _, err := d.proc.Stop(); err != nil {
		t.Errorf("%s: %v", d.h, err)
	}
	for _, pid := range cgroupProcs(d.cgroup) {
		t.Logf("%s: killing pid %d left in cgroup %s", d.h, pid, d.cgroup)
		unix.Kill(pid, syscall.SIGKILL)
	}
	if err := removeCgroups(d.cgroup); err != nil {
		t.Errorf("%s: %v", d.h, err)
	}
	for _, m := range mountsUnder(d.dir) {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
			t.Errorf("%s: unmount %s: %v", d.h, m, err)
		}
	}
	if err := os.RemoveAll(d.dir); err != nil {
		t.Errorf("%s: %v", d.h, err)
	}
}

// checkBridge checks docker0 and the container against subnet.env: the
// leased address with host part 1 on docker0, FLANNEL_MTU on docker0 and in
// the container, the container's address inside the lease, dockerd's
// masquerading the opposite of agentd's, and dockerd's FORWARD DROP policy.
func (d *dockerd) checkBridge(t *testing.T, ctx context.Context, ip netip.Addr, agentMasq bool) {
	t.Helper()
	env := readEnv(t, d.h)
	addrs, err := d.h.Addrs("docker0")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(addrs, env.Subnet) {
		t.Errorf("%s: docker0 has %v, want FLANNEL_SUBNET %s", d.h, addrs, env.Subnet)
	}
	link, err := d.h.LinkByName("docker0")
	if err != nil {
		t.Fatal(err)
	}
	if got := link.Attrs().MTU; got != env.MTU {
		t.Errorf("%s: docker0 MTU %d, want FLANNEL_MTU %d", d.h, got, env.MTU)
	}
	mtu, err := d.docker(ctx, "exec", d.containers[0], "cat", "/sys/class/net/eth0/mtu")
	if err != nil {
		t.Fatal(err)
	}
	if mtu != strconv.Itoa(env.MTU) {
		t.Errorf("%s: container eth0 MTU %s, want %d", d.h, mtu, env.MTU)
	}
	if !env.Subnet.Masked().Contains(ip) {
		t.Errorf("%s: container address %s outside the lease %s", d.h, ip, env.Subnet.Masked())
	}
	if env.IPMasq != agentMasq {
		t.Errorf("%s: FLANNEL_IPMASQ=%t, want %t", d.h, env.IPMasq, agentMasq)
	}
	nat, err := d.h.Exec(ctx, "iptables", "-w", "5", "-t", "nat", "-S", "POSTROUTING")
	if err != nil {
		t.Fatal(err)
	}
	dockerMasq := fmt.Sprintf("-A POSTROUTING -s %s ! -o docker0 -j MASQUERADE", env.Subnet.Masked())
	if got := strings.Contains(string(nat), dockerMasq); got == agentMasq {
		t.Errorf("%s: FLANNEL_IPMASQ=%t but dockerd's %q present=%t:\n%s", d.h, env.IPMasq, dockerMasq, got, nat)
	}
	if !hasRule(ctx, d.h, "FORWARD", "-P FORWARD DROP") {
		t.Errorf("%s: dockerd did not set the FORWARD policy to DROP", d.h)
	}
	t.Logf("%s: docker0 %s mtu %d (FLANNEL_SUBNET=%s FLANNEL_MTU=%d), container eth0 mtu %s, FLANNEL_IPMASQ=%t so dockerd --ip-masq=%t",
		d.h, env.Subnet, link.Attrs().MTU, env.Subnet, env.MTU, mtu, env.IPMasq, !env.IPMasq)
}

type pingResult struct{ sent, received int }

var busyboxPing = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// ping runs busybox ping in a container, one second apart, each reply
// awaited at most a second. Lost replies are not an error.
func (d *dockerd) ping(ctx context.Context, container string, dst netip.Addr, count int) (pingResult, error) {
	return busyboxPingResult(d.docker(ctx, "exec", container, "ping", "-c", strconv.Itoa(count), "-W", "1", "-q", dst.String()))
}

// busyboxPingResult reads the summary of a busybox ping's output; the
// command's error matters only when there is none (lost replies make
// ping exit non-zero).
func busyboxPingResult(out string, err error) (pingResult, error) {
	m := busyboxPing.FindStringSubmatch(out)
	if m == nil {
		return pingResult{}, fmt.Errorf("no ping summary: %v: %s", err, out)
	}
	sent, _ := strconv.Atoi(m[1])
	recv, _ := strconv.Atoi(m[2])
	return pingResult{sent, recv}, nil
}

// hasRule reports whether `iptables -S chain` in h prints line.
func hasRule(ctx context.Context, h *cluster.Host, chain, line string) bool {
	out, err := h.Exec(ctx, "iptables", "-w", "5", "-S", chain)
	return err == nil && slices.Contains(strings.Split(string(out), "\n"), line)
}

// fwdAccepted is the number of packets AGENTD-FWD's rules accepted in h.
func fwdAccepted(t *testing.T, ctx context.Context, h *cluster.Host) int {
	t.Helper()
	out, err := h.Exec(ctx, "iptables", "-w", "5", "-L", "AGENTD-FWD", "-n", "-v", "-x")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 2 && f[2] == "ACCEPT" {
			p, _ := strconv.Atoi(f[0])
			n += p
		}
	}
	return n
}

// writeBusyboxRootfs writes a tarball of a minimal root file system: a
// static busybox and links for the applets the test uses.
func writeBusyboxRootfs(path, busybox string) error {
	b, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	hdrs := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(b))},
	}
	for _, applet := range []string{"sh", "sleep", "ping", "cat", "ip"} {
		hdrs = append(hdrs, &tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	for _, h := range hdrs {
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
	}
	return errors.Join(tw.Close(), f.Close())
}

// requireStatic stops the test unless path is a statically linked program
// (a dynamic busybox would not run in an image that holds nothing else).
func requireStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			msg := path + " is dynamically linked: install busybox-static (`make deps-integration`)"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cgroupProcs lists the processes in the cgroup tree rel (relative to each
// v1 hierarchy root, or to the v2 root).
func cgroupProcs(rel string) []int {
	var pids []int
	seen := map[int]bool{}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + rel)
	roots = append(roots, "/sys/fs/cgroup/"+rel)
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, s := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(s); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroups removes the cgroup directories named rel, deepest first, in
// every hierarchy. Processes must be gone.
func removeCgroups(rel string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + rel)
	roots = append(roots, "/sys/fs/cgroup/"+rel)
	var errs []error
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for _, dir := range slices.Backward(dirs) {
			// A killed process may take a moment to leave its cgroup.
			err := cluster.Eventually(context.Background(), 5*time.Second, func() error {
				err := unix.Rmdir(dir)
				if errors.Is(err, unix.ENOENT) {
					return nil
				}
				return err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// mountsUnder lists mount points below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	var ms []string
	sc := bufio.NewScanner(io.Reader(f))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			ms = append(ms, fields[4])
		}
	}
	slices.SortFunc(ms, func(a, b string) int { return len(b) - len(a) })
	return ms
}
