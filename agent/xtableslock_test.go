package agent

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
)

// TestXtablesLockHeldDoesNotStallPeers: another program (kube-proxy
// restoring its rules, firewalld, an operator's `iptables -w`) holds the
// xtables lock while our FORWARD jump must be put back. The repair waits,
// but peer changes are still programmed within seconds, and the repair is
// made once the lock is free. Before, iptables-legacy-restore --wait waited
// for the lock as long as it was held, up to the command's one-minute
// timeout, and the reconcile loop with it: no route for a new or changed
// peer for that long, pass after pass while the lock stayed busy.
//
// Real legacy iptables, in a network namespace of the test's own, with
// XTABLES_LOCKFILE naming a lock file of the test's own (the host's
// /run/xtables.lock is not touched); the other program is this test holding
// that file's flock, and flushing FORWARD through another lock file.
func TestXtablesLockHeldDoesNotStallPeers(t *testing.T) {
	inOwnNetns(t, xtablesLockHeldChild)
}

func xtablesLockHeldChild(t *testing.T) {
	legacy, err := exec.LookPath("iptables-legacy")
	if err != nil {
		t.Fatalf("iptables-legacy not found (run `make deps` as root): %v", err)
	}
	lockFile := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	a := &agent{
		cfg: Config{IPTablesForwardRules: true, IPTablesMode: "legacy",
			ResyncInterval: time.Hour, IPTablesResync: time.Second},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	be, leases, ctx := runReconcileLoop(t, a)
	forwardJump := func() error {
		out, err := exec.Command(legacy+"-save", "-t", "filter").CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables-legacy-save: %v: %s", err, out)
		}
		if !bytes.Contains(out, []byte("-A FORWARD -m comment --comment \"agentd forward\" -j AGENTD-FWD")) {
			return fmt.Errorf("no jump from FORWARD to AGENTD-FWD:\n%s", out)
		}
		return nil
	}
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
		}
		return forwardJump()
	})
	if err != nil {
		t.Fatal(err)
	}

	lock, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	flush := exec.Command(legacy, "-w", "-F", "FORWARD")
	flush.Env = append(os.Environ(), "XTABLES_LOCKFILE="+lockFile+".other")
	if out, err := flush.CombinedOutput(); err != nil {
		t.Fatalf("flush FORWARD: %v: %s", err, out)
	}
	// The agent has seen the flush once its restore waits for the lock,
	// or has given up waiting.
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if restoreRunning(t) || strings.Contains(a.obs.status(a.health).LastResyncError, "xtables lock") {
			return nil
		}
		return fmt.Errorf("no iptables-legacy-restore waiting for the lock, and no failed pass naming it")
	})
	if err != nil {
		t.Fatal(err)
	}
	passes, changed := be.passes.Load(), time.Now()
	select {
	case leases.change <- struct{}{}:
	case <-time.After(5 * time.Second):
		t.Fatal("a peer change was not taken within 5 s while another program held the xtables lock: the reconcile loop waits for iptables-restore")
	}
	err = cluster.Eventually(ctx, 5*time.Second, func() error {
		if n := be.passes.Load(); n == passes {
			return fmt.Errorf("no pass over the kernel since the peer change")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("a peer change programmed %v after it came, with the xtables lock held", time.Since(changed).Round(time.Millisecond))
	if e := a.obs.status(a.health).LastResyncError; !strings.Contains(e, "xtables lock") {
		t.Errorf("last resync error %q, want one naming the xtables lock", e)
	}
	if ok, _ := a.health.alive(); !ok {
		t.Error("/healthz fails while the xtables lock is held")
	}

	released := time.Now()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 20*time.Second, forwardJump); err != nil {
		t.Fatalf("the jump was not put back once the lock was free: %v", err)
	}
	t.Logf("FORWARD's jump put back %v after the lock was released", time.Since(released).Round(time.Millisecond))
}

// restoreRunning reports whether a child of this process runs
// iptables-legacy-restore.
func restoreRunning(t *testing.T) bool {
	t.Helper()
	dirs, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := strconv.Itoa(os.Getpid())
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		cmdline, err1 := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		status, err2 := os.ReadFile(filepath.Join("/proc", d.Name(), "status"))
		if err1 != nil || err2 != nil || !bytes.Contains(cmdline, []byte("iptables-legacy-restore")) {
			continue
		}
		for l := range strings.Lines(string(status)) {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "PPid:" && f[1] == self {
				return true
			}
		}
	}
	return false
}

// TestXtablesLockHeldOtherBackendRetried: at start another program holds
// the xtables lock while an earlier run's masquerade chain is still in the
// legacy tables and this run writes to nf_tables. The removal of those
// leftovers, which waits for the lock at most a second, is tried again
// until the lock is free and then made, rather than given up for the run
// as another failure there is: the old masquerade would go on until the
// agent restarted. With rules wanted or not (--ip-masq turned off at the
// same restart, say). Real iptables of both backends, in a network namespace
// of the test's own, with a lock file of its own (XTABLES_LOCKFILE).
func TestXtablesLockHeldOtherBackendRetried(t *testing.T) {
	inOwnNetns(t, xtablesLockOtherBackendChild)
}

func xtablesLockOtherBackendChild(t *testing.T) {
	for _, bin := range []string{"iptables-legacy", "iptables-legacy-save", "iptables-nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (make deps installs Debian's iptables, with both backends)", bin)
		}
	}
	lockFile := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	for _, forward := range []bool{true, false} {
		t.Run(fmt.Sprintf("forward rules %v", forward), func(t *testing.T) {
			otherBackendRetried(t, lockFile, forward)
		})
	}
}

// addLegacyLeftover puts an earlier run's masquerade chain, and the jump
// into it, in the legacy nat table.
func addLegacyLeftover(t *testing.T) {
	t.Helper()
	for _, args := range [][]string{
		{"-t", "nat", "-N", "AGENTD-POSTRTG"},
		{"-t", "nat", "-A", "AGENTD-POSTRTG", "-s", "10.244.0.0/16", "-j", "MASQUERADE"},
		{"-t", "nat", "-A", "POSTROUTING", "-j", "AGENTD-POSTRTG"},
	} {
		if out, err := exec.Command("iptables-legacy", append([]string{"-w"}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("iptables-legacy %v: %v: %s", args, err, out)
		}
	}
}

// legacyLeftover fails while the legacy tables hold a chain of ours.
func legacyLeftover() error {
	out, err := exec.Command("iptables-legacy-save").CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables-legacy-save: %v: %s", err, out)
	}
	if strings.Contains(string(out), "AGENTD-") {
		return fmt.Errorf("the legacy tables still hold the earlier run's chain:\n%s", out)
	}
	return nil
}

// holdXtablesLock takes lockFile's flock, as another iptables user would,
// and returns what releases it.
func holdXtablesLock(t *testing.T, lockFile string) (release func()) {
	t.Helper()
	lock, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
			t.Fatal(err)
		}
	}
}

func otherBackendRetried(t *testing.T, lockFile string, forward bool) {
	addLegacyLeftover(t)
	release := holdXtablesLock(t, lockFile)
	a := &agent{
		cfg: Config{IPTablesForwardRules: forward, IPTablesMode: "nft",
			ResyncInterval: time.Hour, IPTablesResync: time.Second},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	_, _, ctx := runReconcileLoop(t, a)
	// Ready: the first check, which tries the other backend first, is
	// done.
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if legacyLeftover() == nil {
		t.Fatal("the legacy leftovers were removed while the lock was held")
	}
	released := time.Now()
	release()
	if err := cluster.Eventually(ctx, 20*time.Second, legacyLeftover); err != nil {
		t.Fatal(err)
	}
	t.Logf("the legacy leftovers removed %v after the lock was released", time.Since(released).Round(time.Millisecond))
}

// TestXtablesLockKeptOtherBackendLogged: another program keeps the xtables
// lock, so the other backend's leftovers, which may go on masquerading and
// accepting as an earlier run's flags said, cannot be removed. Each check
// tries again, quietly (V(2)) at first, since kube-proxy's restores hold
// the lock for moments; once that has failed for otherBackendLockedFor,
// one error says so, and when the removal is made at last, one line says
// that. Before, only the V(2) lines told of it, at each check for as long
// as the lock was held: at the default verbosity the operator was never
// told. Real iptables of both backends, in a network namespace of the
// test's own, with a lock file of its own (XTABLES_LOCKFILE); the agent's
// clock is the test's, and its checks are called one by one.
func TestXtablesLockKeptOtherBackendLogged(t *testing.T) {
	inOwnNetns(t, xtablesLockKeptChild)
}

func xtablesLockKeptChild(t *testing.T) {
	for _, bin := range []string{"iptables-legacy", "iptables-legacy-save", "iptables-nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (make deps installs Debian's iptables, with both backends)", bin)
		}
	}
	lockFile := filepath.Join(t.TempDir(), "xtables.lock")
	t.Setenv("XTABLES_LOCKFILE", lockFile)
	addLegacyLeftover(t)
	release := holdXtablesLock(t, lockFile)

	var lines []string // the checks run on this goroutine, and log on it
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{Verbosity: 2})
	clock := time.Date(2026, 12, 6, 1, 0, 0, 0, time.UTC)
	a := &agent{
		cfg:    Config{IPTablesForwardRules: true, IPTablesMode: "nft"},
		log:    log,
		health: newHealth(log),
		obs:    newObserver(),
		now:    func() time.Time { return clock },
	}
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	own := lease("10.244.1.0/24", "198.18.0.1")
	// said counts the lines about the other backend at verbosity level
	// (funcr gives an error line no level).
	said := func(level string) int {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, "other iptables backend") && strings.HasPrefix(l, level) {
				n++
			}
		}
		return n
	}
	const errorLine, infoLine, quietLine = `"msg"=`, `"level"=0 `, `"level"=2 `
	check := func(what string, wantErrors, wantInfos int) {
		t.Helper()
		if err := a.reconcileIPTables(t.Context(), netCfg, own); err != nil {
			t.Fatalf("%s: check: %v", what, err)
		}
		if e, i := said(errorLine), said(infoLine); e != wantErrors || i != wantInfos {
			t.Errorf("%s: %d error and %d info lines about the other backend, want %d and %d; the log:\n%s",
				what, e, i, wantErrors, wantInfos, strings.Join(lines, "\n"))
		}
	}

	check("the first check", 0, 0)
	clock = clock.Add(otherBackendLockedFor - time.Second)
	check("a second short of the bound", 0, 0)
	if legacyLeftover() == nil {
		t.Fatal("the legacy leftovers were removed while the lock was held")
	}
	clock = clock.Add(time.Second)
	check("the bound reached", 1, 0)
	clock = clock.Add(time.Hour)
	check("an hour on", 1, 0)
	if n := said(quietLine); n != 3 {
		t.Errorf("%d V(2) lines, want one for each failed check but the one logged as an error (3)", n)
	}
	for _, l := range lines {
		if strings.HasPrefix(l, errorLine) && !strings.Contains(l, "xtables lock") {
			t.Errorf("the error does not name the xtables lock: %s", l)
		}
	}

	release()
	check("the lock released", 1, 1)
	if err := legacyLeftover(); err != nil {
		t.Fatal(err)
	}
	check("the next check", 1, 1)
	t.Logf("the log:\n%s", strings.Join(lines, "\n"))
}
