package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReleaseLeaseRemovalFails: a removal that fails does not stop the
// others, exits 1 naming what is left, and a run again finds no lease and
// removes what is left. The udp backend's descriptor keeper is stopped
// (SIGSTOP) before --release-lease, so it cannot exit once flannel0 is
// deleted and holds port 8285 on: the run deletes flannel0, a route of
// ours left by an earlier host-gw run and our iptables chains all the
// same, leaves alone a flannel.7 made by hand (learning on) and a route of
// another protocol, and exits 1 with the keeper's pid and the command that
// ends it in "agentd failed". A run again while the keeper is stopped
// still exits 1 so (before, it found no flannel0 and exited 0, the keeper
// holding the port); once the keeper runs on (SIGCONT) it exits, and a
// run exits 0 with nothing left of ours.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   udp agent stopped, keeper SIGSTOPped, --release-lease ×3
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseRemovalFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, hfConfig("udp"), "--ip-masq")
	h1 := f.c.Host(1)
	a1 := f.start(h1)
	f.waitReady(h1)
	if code, err := a1.Stop(); err != nil || code != 0 {
		t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
	}
	keepers := keeperPids(t, h1)
	if len(keepers) == 0 {
		t.Fatalf("h1: no descriptor keeper runs after the udp agent stopped")
	}
	for _, pid := range keepers {
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		f.eventually(fmt.Sprintf("the keeper (pid %d) is stopped", pid), 5*time.Second, func() error {
			if s := procState(pid); s != 'T' {
				return fmt.Errorf("its state is %q", s)
			}
			return nil
		})
	}
	// What is not ours stays: a vxlan device named like ours with
	// learning on, a route into the cluster network of another protocol.
	// What is ours goes: a host-gw route (proto 74) an earlier run left.
	for _, args := range [][]string{
		{"link", "add", "flannel.7", "type", "vxlan", "id", "7", "local", h1.IP.String(), "dstport", "8472"},
		{"route", "add", "10.244.98.0/24", "via", "198.18.0.254", "proto", "static"},
		{"route", "add", "10.244.99.0/24", "via", "198.18.0.254", "proto", "74"},
	} {
		if out, err := h1.Exec(f.ctx, "ip", args...); err != nil {
			t.Fatalf("h1 ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if rs := ourRules(t, h1); len(rs) == 0 {
		t.Fatalf("h1 has no iptables rule of ours after an agent ran with --ip-masq")
	}
	pids := strings.Trim(fmt.Sprint(keepers), "[]")
	keeperErr := []string{fmt.Sprintf("the udp backend's descriptor keeper (pids %v) has not exited in ", keepers),
		"since its device was deleted, and may still hold its UDP port (stopped?): kill -KILL " + pids + `"`}
	notOurs := []string{`"leaving alone a device named like a flannel vxlan device`, `device="flannel.7"`, `why="learning is on"`, `command="ip link del flannel.7"`}

	// run is --release-lease on h1: its exit code and log.
	run := func() (int, string) {
		t.Helper()
		off := logLen(t, h1)
		code, err := f.start(h1, "--release-lease").Wait(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		log := logFrom(t, h1, off)
		t.Logf("h1 --release-lease: exit %d\n%s", code, log)
		return code, log
	}
	// left checks what each run leaves: nothing of ours but the keeper
	// (still when stopped), everything of others.
	left := func(when string, stopped bool) {
		t.Helper()
		if _, err := h1.LinkByName("flannel0"); err == nil {
			t.Errorf("h1: flannel0 is still there %s", when)
		}
		if _, err := h1.LinkByName("flannel.7"); err != nil {
			t.Errorf("h1: flannel.7, not ours, is gone %s", when)
		}
		if rs := ourRoutes(t, h1); len(rs) > 0 {
			t.Errorf("h1: routes of ours left %s:\n%s", when, strings.Join(rs, "\n"))
		}
		if rs, err := h1.Routes(); err != nil || !strings.Contains(strings.Join(rs, "\n"), "10.244.98.0/24 via 198.18.0.254") {
			t.Errorf("h1: the route of proto static is gone %s: %v\n%s", when, err, strings.Join(rs, "\n"))
		}
		if rs := ourRules(t, h1); len(rs) > 0 {
			t.Errorf("h1: iptables rules of ours left %s:\n%s", when, strings.Join(rs, "\n"))
		}
		if err := udpPortFree(h1); (err == nil) == stopped {
			t.Errorf("h1: port 8285 taken %s: %v, want %v", when, err != nil, stopped)
		}
	}

	code, log := run()
	if code != 1 {
		t.Errorf("h1 --release-lease with the keeper stopped: exit %d, want 1", code)
	}
	failed := append([]string{`"agentd failed"`, `err="lease released, but removing what agentd made in the kernel: `}, keeperErr...)
	for _, want := range [][]string{
		{`"lease released; subnet.env removed"`},
		{`"deleted our udp backend's TUN device, with its address and route: the lease is released"`, `device="flannel0"`},
		{`"deleted our routes to the peers' subnets: the lease is released"`, `routes=1`, `named=["10.244.99.0/24 via 198.18.0.254"]`},
		{`"deleted our iptables chains (AGENTD-*) and the jumps into them: the lease is released"`},
		notOurs,
		failed,
	} {
		if ls := linesWith(log, want...); len(ls) != 1 {
			t.Errorf("h1: the first --release-lease did not log a line with %s once", strings.Join(want, " and "))
		}
	}
	left("after the first --release-lease", true)

	// Run again with the keeper still stopped: the lease is gone, and so
	// is all else of ours but the keeper, which it names again.
	code, log = run()
	if code != 1 {
		t.Errorf("h1 --release-lease again, the keeper still stopped: exit %d, want 1", code)
	}
	failed = append([]string{`"agentd failed"`, `err="no lease of this host to release, but removing what agentd made in the kernel: `}, keeperErr...)
	for _, want := range [][]string{{`"no lease of this host to release; subnet.env removed"`}, notOurs, failed} {
		if ls := linesWith(log, want...); len(ls) != 1 {
			t.Errorf("h1: the second --release-lease did not log a line with %s once", strings.Join(want, " and "))
		}
	}
	if ls := linesWith(log, `"deleted our`); len(ls) > 0 {
		t.Errorf("h1: the second --release-lease deleted something:\n%s", strings.Join(ls, "\n"))
	}
	left("after the second --release-lease", true)

	// Let go on, the keeper sees its device gone and exits.
	for _, pid := range keepers {
		if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
	}
	f.eventually("h1's descriptor keeper exits once let go on", 10*time.Second, func() error {
		if ps := keeperPids(t, h1); len(ps) > 0 {
			return fmt.Errorf("the descriptor keeper (pids %v) still runs", ps)
		}
		return nil
	})
	code, log = run()
	if code != 0 {
		t.Errorf("h1 --release-lease once the keeper exited: exit %d, want 0", code)
	}
	if ls := linesWith(log, `"no lease of this host to release; subnet.env removed"`); len(ls) != 1 {
		t.Errorf("h1: the third --release-lease did not say once that there is no lease")
	}
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "E") || strings.Contains(l, `"deleted our`) || strings.Contains(l, "descriptor keeper") {
			t.Errorf("h1: the third --release-lease logged: %s", l)
		}
	}
	left("after the third --release-lease", false)
}

// procState is the state letter of process pid (R, S, T, Z…), 0 when it
// is gone.
func procState(pid int) byte {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(stat), ')')
	if i < 0 || i+2 >= len(stat) {
		return 0
	}
	return stat[i+2]
}

// TestReleaseLeaseFileRemovalFails: a file --release-lease cannot remove
// (a lost-subnet.env it gets ENOTEMPTY for, here a directory) keeps
// nothing else: the lease, subnet.env, flannel.1 and our iptables chains
// go all the same, and it exits 1 saying that the lease was released and
// which file stayed. Once that is mended, a run again exits 0. Before, it
// returned at the file's failure: subnet.env and the whole datapath
// stayed, and the error did not say that the lease was released.
func TestReleaseLeaseFileRemovalFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, hfConfig("vxlan"), "--ip-masq")
	h1 := f.c.Host(1)
	a1 := f.start(h1)
	f.waitReady(h1)
	if code, err := a1.Stop(); err != nil || code != 0 {
		t.Fatalf("h1 SIGTERM: exit %d, %v; want 0", code, err)
	}
	lost := h1.StateDir() + "/lost-subnet.env"
	if err := os.MkdirAll(lost+"/d", 0o700); err != nil {
		t.Fatal(err)
	}
	off := logLen(t, h1)
	code, err := f.start(h1, "--release-lease").Wait(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	log := logFrom(t, h1, off)
	t.Logf("h1 --release-lease: exit %d\n%s", code, log)
	if code != 1 {
		t.Errorf("h1 --release-lease, lost-subnet.env not removable: exit %d, want 1", code)
	}
	for _, want := range [][]string{
		{`"lease released; subnet.env removed"`},
		{`"deleted our vxlan device, with its address, neighbour and FDB entries and routes: the lease is released"`, `device="flannel.1"`},
		{`"deleted our iptables chains (AGENTD-*) and the jumps into them: the lease is released"`},
		{`"agentd failed"`, `err="lease released, but removing ` + lost + ` failed: remove ` + lost + `: directory not empty"`},
	} {
		if ls := linesWith(log, want...); len(ls) != 1 {
			t.Errorf("h1: --release-lease did not log a line with %s once", strings.Join(want, " and "))
		}
	}
	if ls := f.leases(); len(ls) > 0 {
		t.Errorf("leases left in etcd: %v", ls)
	}
	if _, err := os.Stat(h1.SubnetFile()); err == nil {
		t.Errorf("h1: subnet.env is still there")
	}
	if _, err := h1.LinkByName("flannel.1"); err == nil {
		t.Errorf("h1: flannel.1 is still there")
	}
	if rs := ourRules(t, h1); len(rs) > 0 {
		t.Errorf("h1: iptables rules of ours left:\n%s", strings.Join(rs, "\n"))
	}

	if err := os.RemoveAll(lost); err != nil {
		t.Fatal(err)
	}
	off = logLen(t, h1)
	if code, err := f.start(h1, "--release-lease").Wait(f.ctx); err != nil || code != 0 {
		t.Errorf("h1 --release-lease again, lost-subnet.env gone: exit %d, %v; want 0\n%s", code, err, logFrom(t, h1, off))
	}
	if log := logFrom(t, h1, off); len(linesWith(log, `"no lease of this host to release; subnet.env removed"`)) != 1 || strings.Contains(log, `"deleted our`) {
		t.Errorf("h1: --release-lease again did not say only that there is no lease:\n%s", log)
	}
}

// TestReleaseLeaseRefusedBesideAgent: --release-lease given another
// --state-dir than the agent running on the host (which agentd.lock
// therefore does not stop) is refused before it releases anything, naming
// that agent: it would delete the running agent's routes, device and
// iptables chains, all of which look like its own. Before, it found no
// lease of its (new) host identity, exited 0, and deleted the running
// agent's flannel.1 (as the leftover of a vxlan agent) and AGENTD-*
// chains, which that agent then made anew.
//
//	ns sw: bridge ─┬─ h1 198.18.0.1   agent A runs; --release-lease --state-dir=state-b beside it
//	               └─ etcd 198.18.0.254
func TestReleaseLeaseRefusedBesideAgent(t *testing.T) {
	t.Parallel()
	f := newFixture(t, 1, hfConfig("vxlan"), "--ip-masq")
	h1 := f.c.Host(1)
	a1 := f.start(h1)
	f.waitReady(h1)
	dev, err := h1.LinkByName("flannel.1")
	if err != nil {
		t.Fatalf("h1 has no flannel.1 while its agent runs: %v", err)
	}
	rules := ourRules(t, h1)
	if len(rules) == 0 {
		t.Fatalf("h1 has no iptables rule of ours while its agent runs with --ip-masq")
	}
	leases := f.leases()
	bin, err := f.c.Binary(f.ctx, "agentd")
	if err != nil {
		t.Fatal(err)
	}
	rel, err := h1.StartNamed("agentd-release", bin, h1.AgentArgs(
		"--state-dir="+h1.Dir+"/state-b",
		"--subnet-file="+h1.Dir+"/subnet-b.env",
		"--healthz-addr="+h1.IP.String()+":8481",
		"--release-lease")...)
	if err != nil {
		t.Fatal(err)
	}
	code, err := rel.Wait(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(rel.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	log := string(raw)
	t.Logf("h1 --release-lease beside the agent: exit %d\n%s", code, log)
	if code != 1 {
		t.Errorf("h1 --release-lease beside a running agent: exit %d, want 1", code)
	}
	if ls := linesWith(log, `"agentd failed"`, fmt.Sprintf("agentd (pid %d) runs in this network namespace", a1.Pid()),
		"nothing released, as --release-lease would delete its routes, devices and iptables chains"); len(ls) != 1 {
		t.Errorf("h1: --release-lease did not fail once naming the running agent (pid %d)", a1.Pid())
	}
	if strings.Contains(log, `"deleted our`) || strings.Contains(log, "subnet.env removed") {
		t.Errorf("h1: --release-lease beside a running agent removed something")
	}
	if l, err := h1.LinkByName("flannel.1"); err != nil || l.Attrs().Index != dev.Attrs().Index {
		t.Errorf("h1: the running agent's flannel.1 (#%d) was deleted: %v", dev.Attrs().Index, err)
	}
	if got := ourRules(t, h1); strings.Join(got, "\n") != strings.Join(rules, "\n") {
		t.Errorf("h1: the running agent's iptables rules changed:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(rules, "\n"))
	}
	if got := f.leases(); len(got) != len(leases) {
		t.Errorf("leases in etcd: %v, want %v", got, leases)
	}
}
