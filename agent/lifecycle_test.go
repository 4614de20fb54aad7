package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
)

// TestStderrGone runs agentd with stdout and stderr on a pipe, as systemd
// (a stream to journald) and a container runtime (a pipe to its shim) do,
// and closes the pipe's reader once the agent is ready, as a journald or
// shim that went away would. The agent goes on: it still programs a new
// peer, logs SIGHUP, and stops with status 0 on SIGTERM. Before, the first
// line it logged after that killed it with SIGPIPE (Go's default for a
// write to a broken pipe on fd 1 or 2), which systemd's Restart=on-failure
// counts as a clean exit: the host was left without an agent.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1     agentd, its output on a pipe
//	               └─ etcd 198.18.0.254  a real etcd
func TestStderrGone(t *testing.T) {
	c := cluster.Start(t, cluster.Options{Hosts: 1})
	ctx := t.Context()
	h1 := c.Host(1)
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/pipe"
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	bin, err := c.Binary(ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	cmd := exec.Command(bin, h1.AgentArgs("--etcd-prefix="+prefix)...)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := h1.Do(cmd.Start); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// polls ends when the agent does: no condition can come true then.
	polls, agentEnded := context.WithCancel(ctx)
	defer agentEnded()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
		agentEnded()
	}()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	// The output until the reader is closed, for the failure messages.
	var out strings.Builder
	copied := make(chan struct{})
	go func() {
		io.Copy(&out, r)
		close(copied)
	}()
	// status is how the agent ended, once it has.
	status := func() string {
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return "killed by " + ws.Signal().String()
		}
		return fmt.Sprintf("exit status %d", ws.ExitStatus())
	}
	// running fails once the agent has exited.
	running := func() error {
		select {
		case <-exited:
			return fmt.Errorf("agentd ended: %s", status())
		default:
			return nil
		}
	}
	err = cluster.Eventually(polls, 30*time.Second, func() error {
		if err := running(); err != nil {
			return err
		}
		if ok, err := h1.Ready(ctx); err != nil || !ok {
			return fmt.Errorf("not ready (%v)", err)
		}
		return nil
	})
	if err != nil {
		r.Close()
		<-copied
		t.Fatalf("%v; its output:\n%s", err, out.String())
	}
	r.Close()
	<-copied
	t.Logf("the agent is ready; its output's reader is closed")

	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	peer := netip.MustParsePrefix("10.244.9.0/24")
	if _, err := cli.Put(ctx, prefix+"/subnets/10.244.9.0-24", `{"PublicIP":"198.18.0.2","BackendType":"host-gw"}`); err != nil {
		t.Fatal(err)
	}
	err = cluster.Eventually(polls, 30*time.Second, func() error {
		if err := running(); err != nil {
			return err
		}
		return h1.WithNetlink(func(nl *netlink.Handle) error {
			routes, err := nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: 74}, netlink.RT_FILTER_PROTOCOL)
			if err != nil {
				return err
			}
			for _, rt := range routes {
				if rt.Dst != nil && rt.Dst.String() == peer.String() {
					return nil
				}
			}
			return errors.New("no route to the new peer " + peer.String())
		})
	})
	if err != nil {
		t.Fatalf("after its output's reader was closed: %v", err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		t.Fatal("agentd did not exit within 20 s of SIGTERM")
	}
	if got := status(); got != "exit status 0" {
		t.Errorf("agentd stopped by SIGTERM with its output's reader closed: %s, want exit status 0", got)
	}
}

// notifyListener is a service manager's notification socket: it collects
// the datagrams an agent sends to NOTIFY_SOCKET.
type notifyListener struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	l := &notifyListener{path: filepath.Join(t.TempDir(), "notify.sock")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: l.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, string(buf[:n]))
			l.mu.Unlock()
		}
	}()
	return l
}

// lines returns every assignment received so far, in order.
func (l *notifyListener) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, m := range l.msgs {
		out = append(out, strings.Split(m, "\n")...)
	}
	return out
}

// count is the number of assignments received so far that are s.
func (l *notifyListener) count(s string) int {
	n := 0
	for _, a := range l.lines() {
		if a == s {
			n++
		}
	}
	return n
}

// await waits until an assignment for which ok holds arrives, and returns
// the index of the first one among lines.
func (l *notifyListener) await(t *testing.T, ctx context.Context, what string, ok func(string) bool) int {
	t.Helper()
	i := -1
	err := cluster.Eventually(ctx, 30*time.Second, func() error {
		i = slices.IndexFunc(l.lines(), ok)
		if i < 0 {
			return fmt.Errorf("no %s among %q", what, l.lines())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// TestSystemdNotify runs agentd as agentd.service would with Type=notify
// and WatchdogSec: NOTIFY_SOCKET and WATCHDOG_USEC set. While it waits for
// the network config, STATUS= says so (systemctl status shows it beside
// "activating (start)") and WATCHDOG=1 keeps the watchdog fed; READY=1
// comes with STATUS=ready once it is ready, and SIGTERM sends STOPPING=1
// before a clean exit. Before, READY=1 was all it sent: no status while
// it waited, and systemd's watchdog would have killed it every
// WatchdogSec.
func TestSystemdNotify(t *testing.T) {
	n := listenNotify(t)
	c := cluster.Start(t, cluster.Options{Hosts: 1, AgentEnv: []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=400000"}})
	ctx := t.Context()
	h1 := c.Host(1)
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	const prefix = "/notify"
	a, err := h1.StartAgent(ctx, "--etcd-prefix="+prefix)
	if err != nil {
		t.Fatal(err)
	}
	n.await(t, ctx, "STATUS= naming the absent network config", func(s string) bool {
		return strings.HasPrefix(s, "STATUS=not ready") && strings.Contains(s, "network config not found: key /notify/config is absent from etcd")
	})
	err = cluster.Eventually(ctx, 30*time.Second, func() error {
		if got := n.count("WATCHDOG=1"); got < 2 {
			return fmt.Errorf("%d WATCHDOG=1 while waiting for the config, want 2 or more: %q", got, n.lines())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, prefix+"/config", `{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}`); err != nil {
		t.Fatal(err)
	}
	ready := n.await(t, ctx, "READY=1", func(s string) bool { return s == "READY=1" })
	n.await(t, ctx, "STATUS=ready", func(s string) bool { return s == "STATUS=ready" })
	if ok, err := h1.Ready(ctx); err != nil || !ok {
		t.Errorf("READY=1 sent, but /readyz is not 200 (%v)", err)
	}
	if code, err := a.Stop(); code != 0 || err != nil {
		t.Fatalf("SIGTERM: exit %d, %v; want 0", code, err)
	}
	lines := n.lines()
	stopping := slices.Index(lines, "STOPPING=1")
	if stopping < ready {
		t.Errorf("no STOPPING=1 after READY=1 and SIGTERM: %q", lines)
	}
	if got := n.count("READY=1"); got != 1 {
		t.Errorf("READY=1 sent %d times, want once: %q", got, lines)
	}
	t.Logf("notifications: %q", lines)
}

// A stop while the agent waits for its network config, before any lease,
// sent "stopping; the datapath and the lease stay in place": no lease was
// held and nothing that needs one was set up.
func TestSystemdNotifyStopBeforeLease(t *testing.T) {
	n := listenNotify(t)
	c := cluster.Start(t, cluster.Options{Hosts: 1, AgentEnv: []string{"NOTIFY_SOCKET=" + n.path}})
	ctx := t.Context()
	a, err := c.Host(1).StartAgent(ctx, "--etcd-prefix=/notify-before-lease")
	if err != nil {
		t.Fatal(err)
	}
	n.await(t, ctx, "STATUS= naming the absent network config", func(s string) bool {
		return strings.HasPrefix(s, "STATUS=not ready") && strings.Contains(s, "network config not found")
	})
	if code, err := a.Stop(); code != 0 || err != nil {
		t.Fatalf("SIGTERM: exit %d, %v; want 0", code, err)
	}
	n.await(t, ctx, "STATUS= of the stop", func(s string) bool { return strings.HasPrefix(s, "STATUS=stopping") })
	const want = "STATUS=stopping; no lease was taken yet, so no routes were set up and subnet.env was not written"
	if lines := n.lines(); !slices.Contains(lines, want) {
		t.Errorf("notifications %q, want %q", lines, want)
	}
}

// fakeIPTablesRestoreHung stands in for an iptables-restore (nf_tables,
// 1.8.9) that does not return, as one waiting for the xtables lock that
// kube-proxy holds: it records its start in the file named by %[1]s, then
// reads the FIFO %[1]s.fifo, whose writer never comes, in a subshell: a
// child that keeps the command's output open after the command is killed,
// as a wrapper script's iptables-restore would.
const fakeIPTablesRestoreHung = `#!/bin/sh
if [ "$1" = --version ]; then echo "iptables v1.8.9 (nf_tables)"; exit 0; fi
: >>'%[1]s'
(read -r l <'%[1]s.fifo')
`

// installHungIPTables is installFakeIPTables where one of the scripts is
// fakeIPTablesRestoreHung: it makes the FIFO that script waits on, and ends
// the hung command, if it is still there, when the test ends (a reader and a
// writer of its own, O_RDWR not waiting for a reader, closed at once, give
// it end of file). It returns the file the hung command makes as it starts.
func installHungIPTables(t *testing.T, iptables, restore, save string) (started string) {
	t.Helper()
	started = installFakeIPTables(t, iptables, restore, save)
	fifo := started + ".fifo"
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if f, err := os.OpenFile(fifo, os.O_RDWR, 0); err == nil {
			f.Close()
		}
	})
	return started
}

// TestStopDuringIPTablesRestore: a stop (SIGTERM) while the reconcile loop
// waits for iptables-restore ends the command and the loop at once. Before,
// the loop waited for the command to end by itself or at its timeout, a
// minute: longer than Kubernetes' 30 s grace period, after which the pod
// was killed, and the stop of agentd.service took that long. Run like
// TestIPTablesRetriedUntilAvailable, in a network namespace of its own.
func TestStopDuringIPTablesRestore(t *testing.T) {
	inOwnNetns(t, stopDuringIPTablesRestoreChild)
}

func stopDuringIPTablesRestoreChild(t *testing.T) {
	started := installHungIPTables(t, fakeIPTables, fakeIPTablesRestoreHung, fakeIPTables)
	a := &agent{
		cfg:    Config{IPMasq: true, IPTablesForwardRules: true, ResyncInterval: time.Hour},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	leases := newFakeLeases(lease("10.244.1.0/24", "198.18.0.1"))
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.reconcileLoop(ctx, &fakeBackend{}, leases, netCfg, nil, func() error { return nil }) }()
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		_, err := os.Stat(started)
		return err
	})
	if err != nil {
		t.Fatalf("iptables-restore not started: %v", err)
	}
	stop := time.Now()
	cancel()
	select {
	case err := <-done:
		t.Logf("the loop returned %v after its context ended", time.Since(stop).Round(time.Millisecond))
		if err != nil {
			t.Errorf("reconcile loop stopped during iptables-restore: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reconcile loop did not return within 10 s of its context's end: it waits for iptables-restore")
	}
}

// TestStopDuringIPTablesCleanup: with no rules wanted, the check that
// removes chains an earlier run may have left (an iptables-save per table)
// can be under way when the agent stops. The stop ends it, and the loop
// says nothing of it: no "cannot remove iptables chains" error, which would
// tell the operator of a failure that is only the stop. Run like
// TestIPTablesRetriedUntilAvailable, in a network namespace of its own.
func TestStopDuringIPTablesCleanup(t *testing.T) {
	inOwnNetns(t, stopDuringIPTablesCleanupChild)
}

func stopDuringIPTablesCleanupChild(t *testing.T) {
	// The hung restore's script, as a save: it records its start, then
	// waits for a writer of the FIFO that never comes.
	started := installHungIPTables(t, fakeIPTables, fakeIPTables, fakeIPTablesRestoreHung)
	logs := &logLines{}
	a := &agent{
		cfg:    Config{ResyncInterval: time.Hour},
		log:    funcr.New(logs.add, funcr.Options{}),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	leases := newFakeLeases(lease("10.244.1.0/24", "198.18.0.1"))
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- a.reconcileLoop(ctx, &fakeBackend{}, leases, netCfg, nil, func() error { return nil }) }()
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		_, err := os.Stat(started)
		return err
	})
	if err != nil {
		t.Fatalf("iptables-save not started: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("reconcile loop stopped during the iptables cleanup: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the reconcile loop did not return within 10 s of its context's end")
	}
	for _, l := range logs.get() {
		if strings.Contains(l, "cannot remove iptables chains") {
			t.Errorf("the stop logged %s", l)
		}
	}
}
