package udp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestLeftoverRemoved: the host switched from udp to another backend, and
// the agent starts with it. flannel0 goes when it is as agentd makes it,
// serves only the cluster network and nothing but agentd's descriptor
// keeper holds it (or nothing at all: its keeper was killed); the keeper
// then exits at once, freeing its port. It stays, logged with why and the
// command that deletes it, while an agent runs udp on it (its claim held),
// while another process holds a queue of it beside the keeper, and when it
// is flanneld's (single-queue, held open by flanneld). The keeper here
// checks its device only hourly on its own (keeperCheckEnv), so only the
// link event can end it within the wait.
func TestLeftoverRemoved(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	for _, tc := range []struct {
		name string
		// setup leaves flannel0 in the state to judge, with the agent
		// that made it, if any, gone.
		setup func(t *testing.T, h *testHost)
		gone  bool
		why   string // in the log line
	}{
		{"the keeper alone holds it", func(t *testing.T, h *testHost) { h.udpAgentGone(t) }, true,
			"only agentd's descriptor keeper (pids "},
		// Prepared while the agent waited for its first lease, and let go
		// for another config (or at a stop): no pass gave it its address.
		// Before, "it has 0 addresses [], not one" left it, and its keeper
		// holding the port.
		{"made before a lease", func(t *testing.T, h *testHost) {
			h.start()
			h.stop()
			h.b.fds.close()
			h.b.fds = nil
		}, true, "no address (made before a lease gave it one)"},
		{"its keeper was killed", func(t *testing.T, h *testHost) {
			h.udpAgentGone(t)
			for _, pid := range h.keepers(t) {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for attachedQueues(t, h) != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the killed keeper's queues are still attached")
				}
				time.Sleep(time.Millisecond)
			}
		}, true, "no process holds it open"},
		{"an agent runs udp on it", func(t *testing.T, h *testHost) {
			h.start()
			h.reconcile()
		}, false, "another agentd (pid "},
		{"another process holds a queue too", func(t *testing.T, h *testHost) {
			h.udpAgentGone(t)
			var fd int
			if err := h.host.Do(func() (err error) { fd, err = openQueue(DeviceName); return err }); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
		}, false, "queues of it are open, "},
		{"flanneld's, held open by flanneld", func(t *testing.T, h *testHost) {
			var fd int
			if err := h.host.Do(func() error {
				var err error
				if fd, err = unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
					return err
				}
				ifr, err := unix.NewIfreq(DeviceName)
				if err != nil {
					return err
				}
				ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
				return unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
			}); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			l, err := h.host.Handle.LinkByName(DeviceName)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.host.Handle.AddrAdd(l, &netlink.Addr{IPNet: backend.IPNet(netip.MustParsePrefix("10.244.1.0/32"))}); err != nil {
				t.Fatal(err)
			}
		}, false, "a single-queue one is flanneld's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestNet(t)
			tc.setup(t, h)
			keepers := h.keepers(t)
			cfg := h.cfg
			nc := *cfg.Network
			nc.BackendType, nc.Backend = "vxlan", json.RawMessage(`{"Type":"vxlan"}`)
			cfg.Network = &nc
			start := time.Now()
			removeLeftover(context.Background(), h.host.Handle, h.host.Do, cfg, 30*time.Second, cfg.Network.BackendType)
			t.Logf("judged (and deleted, and the keeper gone) in %v", time.Since(start).Round(time.Microsecond))

			if _, err := h.host.Handle.LinkByName(DeviceName); (err != nil) != tc.gone {
				t.Errorf("flannel0 deleted: %v, want %v\n%s", err != nil, tc.gone, h.logText())
			}
			msg := `"leaving alone a device named like the udp backend's TUN device`
			if tc.gone {
				msg = `"deleted our udp backend's TUN device: the network runs another backend now"`
			}
			if n := h.countLogsWith(msg, tc.why); n != 1 {
				t.Errorf("logged %d times %s … %q, want once:\n%s", n, msg, tc.why, h.logText())
			}
			if !tc.gone && h.countLogs(`"command"="ip link del flannel0"`) != 1 {
				t.Errorf("no log line gives the command that deletes it:\n%s", h.logText())
			}
			if !tc.gone || len(keepers) == 0 {
				return
			}
			// removeLeftover waited for the keeper: it is gone, and its port free.
			if err := h.host.Do(func() error { return bindExclusive(h.b.listenAddr()) }); err != nil {
				t.Errorf("port %s still taken once flannel0 was deleted: %v", h.b.listenAddr(), err)
			}
			if h.host.Do(func() error {
				if keeperListens(DeviceName) {
					t.Errorf("a keeper still listens once flannel0 was deleted")
				}
				return nil
			}) != nil {
				t.Fatal("cannot enter the namespace")
			}
		})
	}
}

// TestLeftoverWaitEndsAtStop: the wait for the keeper to let go of its port
// once flannel0 is deleted ends when the agent is stopped, so a stop during
// start-up stays prompt even with a keeper that does not exit (stopped with
// SIGSTOP here).
func TestLeftoverWaitEndsAtStop(t *testing.T) {
	addKeeperEnv(t, keeperCheckEnv+"=1h")
	h := newTestNet(t)
	h.udpAgentGone(t)
	keepers := h.keepers(t)
	if len(keepers) == 0 {
		t.Fatal("no keeper holds flannel0")
	}
	for _, pid := range keepers {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })
	}
	cfg := h.cfg
	nc := *cfg.Network
	nc.BackendType, nc.Backend = "host-gw", json.RawMessage(`{"Type":"host-gw"}`)
	cfg.Network = &nc
	ctx, stop := context.WithCancel(context.Background())
	const stopAfter = 200 * time.Millisecond
	time.AfterFunc(stopAfter, stop)
	start := time.Now()
	removeLeftover(ctx, h.host.Handle, h.host.Do, cfg, 30*time.Second, cfg.Network.BackendType)
	took := time.Since(start)
	if _, err := h.host.Handle.LinkByName(DeviceName); err == nil {
		t.Fatalf("flannel0 not deleted:\n%s", h.logText())
	}
	if took > stopAfter+time.Second {
		t.Errorf("removeLeftover returned %v after it began, %v after the stop; want within 1 s of the stop", took.Round(time.Millisecond), (took - stopAfter).Round(time.Millisecond))
	}
}

// udpAgentGone starts the udp backend as an agent does, with a first pass
// (flannel0 gets its address and route), and ends it as the agent's exit
// does: its workers stop, its claim and its copies of the descriptors go,
// and the keeper holds them alone.
func (h *testHost) udpAgentGone(t *testing.T) {
	t.Helper()
	h.start()
	h.reconcile()
	h.stop()
	h.b.fds.close()
	h.b.fds = nil
	if h.keepers(t) == nil {
		t.Fatal("no keeper holds flannel0")
	}
	if err := h.host.Do(func() error { return bindExclusive(h.b.listenAddr()) }); err == nil {
		t.Fatalf("port %s is free while the keeper runs", h.b.listenAddr())
	}
}

// keepers are the pids of the keepers of flannel0 in the host namespace.
func (h *testHost) keepers(t *testing.T) []int {
	t.Helper()
	var pids []int
	if err := h.host.Do(func() error { pids = keeperPids(DeviceName); return nil }); err != nil {
		t.Fatal(err)
	}
	return pids
}

// countLogsWith counts the log entries that hold every one of subs.
func (h *testHost) countLogsWith(subs ...string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, l := range h.logs {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			n++
		}
	}
	return n
}

// stopKeepers stops (SIGSTOP) h's keepers and returns their pids. A keeper
// the test leaves stopped is killed at its end, once shown to be one still
// (its pid, gone, may be another process's by then).
func stopKeepers(t *testing.T, h *testHost) []int {
	t.Helper()
	keepers := h.keepers(t)
	for _, pid := range keepers {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, pid := range h.keepers(t) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return keepers
}

// TestDecommissionStoppedKeeper: agentd --release-lease (Decommission)
// deletes flannel0, but its keeper, stopped with SIGSTOP, cannot exit and
// holds the UDP port: the removal fails, naming the keeper's pid and the
// command that ends it. A release run again, with flannel0 gone, fails so
// too while the keeper runs on; once the keeper is let go on (SIGCONT), it
// exits, and a run finds nothing left. Before, the second run returned nil
// at once (no flannel0, nothing to do), so agentd exited 0 with the
// keeper still holding the port, though README's recovery for a failed
// removal is to run --release-lease again.
func TestDecommissionStoppedKeeper(t *testing.T) {
	h := newTestNet(t)
	h.udpAgentGone(t)
	keepers := stopKeepers(t, h)
	const wait = 200 * time.Millisecond
	pids := strings.Trim(fmt.Sprint(keepers), "[]")
	for _, run := range []string{"first", "second"} {
		err := removeLeftover(context.Background(), h.host.Handle, h.host.Do, h.cfg, wait, "")
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("descriptor keeper (pids %v) has not exited in %v", keepers, wait)) ||
			!strings.HasSuffix(err.Error(), "(stopped?): kill -KILL "+pids) {
			t.Fatalf("%s run with the keeper (pids %s) stopped: %v; want its pids and the kill command\n%s", run, pids, err, h.logText())
		}
		if _, err := h.host.Handle.LinkByName(DeviceName); err == nil {
			t.Fatalf("%s run: flannel0 not deleted:\n%s", run, h.logText())
		}
	}
	if n := h.countLogsWith(`"deleted our udp backend's TUN device, with its address and route: the lease is released"`); n != 1 {
		t.Errorf("logged the deletion %d times, want once:\n%s", n, h.logText())
	}

	for _, pid := range keepers {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(h.keepers(t)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the keeper (pids %s) runs on 10 s after SIGCONT, its device gone", pids)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := removeLeftover(context.Background(), h.host.Handle, h.host.Do, h.cfg, wait, ""); err != nil {
		t.Fatalf("a run once the keeper exited: %v", err)
	}
	if err := h.host.Do(func() error { return bindExclusive(h.b.listenAddr()) }); err != nil {
		t.Errorf("port %s still taken once the keeper exited: %v", h.b.listenAddr(), err)
	}
}
