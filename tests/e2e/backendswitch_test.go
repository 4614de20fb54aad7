package e2e

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestBackendSwitchRemovesOldDevice: the operator switches the network's
// backend and restarts every agent. The old backend's device goes at start
// when it is provably the agent's own and nothing else uses it, logged once
// with why; one that fails the proof (here an extra address 198.19.0.11/32,
// given to h2's) stays, logged with the command that deletes it. Before,
// every old device stayed, unlogged: flannel.1 with its neighbour and FDB
// entries and its <subnet>.0/32, and flannel0 with its route for the whole
// cluster network and the udp descriptor keeper holding port 8285.
//
//	h1 (198.18.0.1): old device as the agent left it  -> deleted
//	h2 (198.18.0.2): old device given 198.19.0.11/32  -> left alone
func TestBackendSwitchRemovesOldDevice(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		from, to, dev string
		deleted       string // the log line of the deletion
	}{
		{"vxlan", "host-gw", "flannel.1", "deleted our vxlan device: the network runs another backend now"},
		{"vxlan", "udp", "flannel.1", "deleted our vxlan device: the network runs another backend now"},
		{"udp", "vxlan", "flannel0", "deleted our udp backend's TUN device: the network runs another backend now"},
		{"udp", "host-gw", "flannel0", "deleted our udp backend's TUN device: the network runs another backend now"},
	} {
		t.Run(tc.from+"-to-"+tc.to, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, 2, hfConfig(tc.from))
			h1, h2 := f.c.Host(1), f.c.Host(2)
			a1, a2 := f.start(h1), f.start(h2)
			f.waitReady(h1, h2)
			cs := []*cluster.Container{f.container(h1), f.container(h2)}
			f.pingAll(cs)
			for _, a := range []*cluster.Agent{a1, a2} {
				if code, err := a.Stop(); err != nil || code != 0 {
					t.Fatalf("%s SIGTERM: exit %d, %v; want 0", a.Host, code, err)
				}
			}
			keepers := map[*cluster.Host][]int{}
			if tc.from == "udp" {
				for _, h := range []*cluster.Host{h1, h2} {
					if keepers[h] = keeperPids(t, h); len(keepers[h]) == 0 {
						t.Fatalf("%s: no descriptor keeper runs after the udp agent stopped", h)
					}
					if err := udpPortFree(h); err == nil {
						t.Fatalf("%s: port 8285 is free while the keeper runs", h)
					}
				}
			}
			if _, err := h2.Exec(f.ctx, "ip", "addr", "add", "198.19.0.11/32", "dev", tc.dev); err != nil {
				t.Fatal(err)
			}
			off1, off2 := logLen(t, h1), logLen(t, h2)

			f.put(prefix+"/config", hfConfig(tc.to))
			f.start(h1)
			f.start(h2)
			f.waitReady(h1, h2)
			f.pingAll(cs)

			if _, err := h1.LinkByName(tc.dev); err == nil {
				t.Errorf("h1: %s is still there after the switch to %s", tc.dev, tc.to)
			}
			log1, log2 := logFrom(t, h1, off1), logFrom(t, h2, off2)
			if ls := linesWith(log1, `"`+tc.deleted+`"`, `device="`+tc.dev+`"`, `why="`); len(ls) != 1 {
				t.Errorf("h1: the deletion of %s is not logged once as %q:\n%s", tc.dev, tc.deleted, log1)
			} else {
				t.Logf("h1: %s", ls[0])
			}
			if _, err := h2.LinkByName(tc.dev); err != nil {
				t.Errorf("h2: %s, with an address outside the cluster network, was deleted: %v", tc.dev, err)
			}
			if ls := linesWith(log2, `"leaving alone a device named like`, `command="ip link del `+tc.dev+`"`, "198.19.0.11/32"); len(ls) != 1 {
				t.Errorf("h2: no log line says why %s is left and how to delete it:\n%s", tc.dev, log2)
			} else {
				t.Logf("h2: %s", ls[0])
			}
			if tc.from != "udp" {
				return
			}
			// The keeper exits when its device goes, freeing the port
			// (at once: the agent waits for it before it goes on).
			if err := udpPortFree(h1); err != nil {
				t.Errorf("h1: port 8285 still taken once the agent switched to %s: %v", tc.to, err)
			}
			for _, pid := range keepers[h1] {
				if running(pid) {
					t.Errorf("h1: the descriptor keeper (pid %d) still runs", pid)
				}
			}
			if got := keeperPids(t, h2); len(got) == 0 {
				t.Errorf("h2: the keeper of the flannel0 left alone exited")
			}
		})
	}
}

// linesWith returns the lines of log that contain every one of subs.
func linesWith(log string, subs ...string) []string {
	var ls []string
	for _, l := range strings.Split(log, "\n") {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(l, s)
		}
		if all {
			ls = append(ls, l)
		}
	}
	return ls
}

// keeperPids are the pids of the udp descriptor keepers running in h's
// network namespace.
func keeperPids(t *testing.T, h *cluster.Host) []int {
	t.Helper()
	var pids []int
	if err := h.Do(func() error {
		self, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		ents, err := os.ReadDir("/proc")
		if err != nil {
			return err
		}
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil || !running(pid) {
				continue
			}
			cmd, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
			if err != nil || string(cmd) != "agentd-udp-keeper\x00flannel0\x00" {
				continue
			}
			if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/net"); err == nil && ns == self {
				pids = append(pids, pid)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return pids
}

// running reports whether process pid exists and is not a zombie.
func running(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(stat), ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] != 'Z'
}

// udpPortFree binds h's 198.18.0.<i>:8285, the udp backend's, for a moment:
// an error when a socket holds it.
func udpPortFree(h *cluster.Host) error {
	return h.Do(func() error {
		c, err := net.ListenPacket("udp4", net.JoinHostPort(h.IP.String(), "8285"))
		if err != nil {
			return err
		}
		return c.Close()
	})
}
