package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"github.com/agentd/agentd/tests/sdunit"
	"github.com/vishvananda/netlink"
)

// TestSystemdUnitCapabilitiesUpgrade is the upgrade an operator makes to
// the agentd.service that bounds agentd's capabilities (and the way back),
// on udp hosts: agentd ran with every capability of root, and so does its
// descriptor keeper, which outlives the restart (KillMode=process). The
// agent restarted under the unit's bounds (setpriv, as in
// TestSystemdUnitCapabilities) may not read the old keeper's /proc entries
// (its namespace, descriptors and binary: a ptrace access check, and the
// keeper has capabilities the agent lacks). It takes the queues and
// sockets over all the same, and must replace the keeper with one of its
// own, bounded as it is; before 2026-12-06 it could not tell the keeper
// from none in /proc and kept it, with all of root's capabilities, for as
// long as the device lived, also when the keeper ran another (older)
// binary. Going back to the unbounded unit keeps the bounded keeper. No
// ping (every 10 ms) is lost across either restart. Then the other host,
// still on its unbounded udp agent and keeper, is switched to vxlan and
// restarted under the bounds: flannel0 is the udp backend's leftover and
// is deleted, which before 2026-12-06 it was not ("2 queues of it are
// open, 0 of them held by agentd's descriptor keeper: another process
// uses it"), and the keeper goes with it.
func TestSystemdUnitCapabilitiesUpgrade(t *testing.T) {
	u, err := sdunit.Load(agentdUnit)
	if err != nil {
		t.Fatal(err)
	}
	var mask uint64
	bounding := "-all"
	for _, n := range u.Words("Service", "CapabilityBoundingSet") {
		bit, ok := capBits[n]
		if !ok {
			t.Fatalf("agentd.service's CapabilityBoundingSet= names %s, which this test does not expect agentd to need", n)
		}
		mask |= 1 << bit
		bounding += ",+" + strings.ToLower(strings.TrimPrefix(n, "CAP_"))
	}
	if mask == 0 {
		t.Fatal("agentd.service sets no CapabilityBoundingSet=: there is no upgrade to test")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("needs setpriv (apt-get install util-linux); CI is set, so this is a failure")
		}
		t.Skip("needs setpriv (apt-get install util-linux)")
	}

	wrapper := filepath.Join(t.TempDir(), "agentd")
	c := cluster.Start(t, cluster.Options{Hosts: 2, AgentdBin: wrapper, Logf: t.Logf})
	ctx := context.Background()
	bin, err := c.Binary(ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	// unit installs the old unit (agentd as root with every capability)
	// or the new one, for the agents started next.
	unit := func(bounded bool) {
		script := fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", bin)
		if bounded {
			script = fmt.Sprintf("#!/bin/sh\nexec %s --bounding-set=%s --inh-caps=-all --no-new-privs %s \"$@\"\n", setpriv, bounding, bin)
		}
		if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cli, err := c.EtcdClient()
	if err != nil {
		t.Fatal(err)
	}
	config := func(backend string) {
		if _, err := cli.Put(ctx, "/coreos.com/network/config", fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, overlay, backend)); err != nil {
			t.Fatal(err)
		}
	}
	restart := func(h *cluster.Host) {
		t.Helper()
		if a := h.Agent(); a != nil {
			if code, err := a.Stop(); err != nil || code != 0 {
				t.Fatalf("%s SIGTERM: exit %d, %v; want 0", h, code, err)
			}
		}
		if _, err := h.StartAgent(ctx); err != nil {
			t.Fatal(err)
		}
		if err := h.WaitReady(ctx, readyWithin); err != nil {
			t.Fatalf("%s not ready: %v", h, err)
		}
	}

	unit(false)
	config("udp")
	h1, h2 := c.Host(1), c.Host(2)
	restart(h1)
	restart(h2)
	old := keeperPidsIn(t, h1)
	if len(old) != 1 {
		t.Fatalf("%s's descriptor keepers before the upgrade: %v, want one", h1, old)
	}
	if caps := capPrm(t, old[0]); caps&^mask == 0 {
		t.Fatalf("the keeper of the unbounded agent has CapPrm %016x, no more than the unit's %016x: nothing to test", caps, mask)
	}
	c1, err := h1.AddContainer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := h2.AddContainer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ping, err := c1.StartNamed("ping-upgrade", "ping", "-n", "-D", "-i", "0.01", "-W", "1", c2.IP().String())
	if err != nil {
		t.Fatal(err)
	}
	awaitAnswers(t, ping, 20)

	// The upgrade: the new unit, and a restart under its bounds.
	unit(true)
	restart(h1)
	checkCaps(t, h1.Agent().Pid(), mask)
	ks := keeperPidsIn(t, h1)
	switch {
	case len(ks) != 1:
		t.Fatalf("%s's descriptor keepers after the restart under the unit's bounds: %v, want one", h1, ks)
	case ks[0] == old[0]:
		t.Errorf("%s's descriptor keeper after the restart under the unit's bounds is the unbounded agent's (pid %d, CapPrm %016x), want one of the bounded agent's", h1, ks[0], capPrm(t, ks[0]))
	default:
		checkCaps(t, ks[0], mask)
	}
	if log, _ := h1.AgentLog(); !strings.Contains(log, `"replaced the descriptor keeper `) {
		t.Errorf("%s's agent did not say it replaced the keeper", h1)
	}

	// And back.
	unit(false)
	restart(h1)
	if got := keeperPidsIn(t, h1); !slices.Equal(got, ks) {
		t.Errorf("%s's descriptor keepers after going back to the unbounded unit: %v, want the bounded agent's %v still", h1, got, ks)
	}
	awaitAnswers(t, ping, 20)
	lost, gap := pingLoss(t, ping)
	t.Logf("%s -> %s every 10 ms across both restarts: %d lost, longest wait between answers %v", c1, c2, lost, gap)
	if lost != 0 {
		t.Errorf("%d pings lost across the restarts", lost)
	}

	// h2, on the old unit with its keeper, switches to vxlan under the new.
	config("vxlan")
	unit(true)
	restart(h2)
	if _, err := h2.LinkByName("flannel0"); !errors.As(err, &netlink.LinkNotFoundError{}) {
		t.Errorf("%s: flannel0 after the switch to vxlan under the unit's bounds: %v; want it deleted", h2, err)
	}
	if err := cluster.Eventually(ctx, 5*time.Second, func() error {
		if ks := keeperPidsIn(t, h2); len(ks) > 0 {
			return fmt.Errorf("%s's descriptor keepers %v still run", h2, ks)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}
}

// keeperPidsIn returns the pids of the udp backend's descriptor keepers in
// h's network namespace, read from /proc by the test (with every
// capability).
func keeperPidsIn(t *testing.T, h *cluster.Host) []int {
	t.Helper()
	var self string
	if err := h.Do(func() (err error) { self, err = os.Readlink("/proc/thread-self/ns/net"); return err }); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		ns, _ := os.Readlink("/proc/" + e.Name() + "/ns/net")
		if string(cmd) == "agentd-udp-keeper\x00flannel0\x00" && ns == self {
			pids = append(pids, pid)
		}
	}
	return pids
}

// capPrm returns the permitted capabilities of process pid.
func capPrm(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CapPrm:\s*([0-9a-f]+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no CapPrm in /proc/%d/status", pid)
	}
	v, err := strconv.ParseUint(string(m[1]), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// pingAnswer is a line of `ping -D` for an answer: its time and sequence.
var pingAnswer = regexp.MustCompile(`(?m)^\[(\d+\.\d+)\] \d+ bytes from .*: icmp_seq=(\d+) `)

// awaitAnswers waits until ping (started with -D) has printed n answers
// more than it had at the call.
func awaitAnswers(t *testing.T, ping *cluster.Process, n int) {
	t.Helper()
	count := func() int {
		b, _ := os.ReadFile(ping.LogPath)
		return len(pingAnswer.FindAll(b, -1))
	}
	want := count() + n
	if err := cluster.Eventually(context.Background(), 10*time.Second, func() error {
		if ping.Exited() {
			return fmt.Errorf("ping exited")
		}
		if got := count(); got < want {
			return fmt.Errorf("%d answers, want %d", got, want)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// pingLoss stops ping and returns how many probes went unanswered between
// its first answer and its last, and the longest time between answers.
func pingLoss(t *testing.T, ping *cluster.Process) (lost int, gap time.Duration) {
	t.Helper()
	ping.Kill()
	b, err := os.ReadFile(ping.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	first, last := -1, -1
	var prev float64
	for _, m := range pingAnswer.FindAllSubmatch(b, -1) {
		at, _ := strconv.ParseFloat(string(m[1]), 64)
		seq, _ := strconv.Atoi(string(m[2]))
		if first < 0 {
			first = seq
		} else if d := time.Duration((at - prev) * float64(time.Second)); d > gap {
			gap = d
		}
		prev, last, seen[seq] = at, seq, true
	}
	for seq := first; seq <= last; seq++ {
		if !seen[seq] {
			lost++
		}
	}
	return lost, gap.Round(time.Millisecond)
}
