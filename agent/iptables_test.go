package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/internal/testchild"
	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
	"github.com/vishvananda/netlink"
)

// fakeBackend programs nothing and counts the reconcile passes.
type fakeBackend struct{ passes atomic.Int32 }

var _ backend.Backend = (*fakeBackend)(nil)

func (*fakeBackend) Type() string                                     { return "fake" }
func (*fakeBackend) Prepare(context.Context) (json.RawMessage, error) { return nil, nil }
func (*fakeBackend) MTU() int                                         { return 1450 }
func (b *fakeBackend) Reconcile(ctx context.Context, _ subnet.Lease, _ []subnet.Lease) (backend.Result, error) {
	b.passes.Add(1)
	return backend.Result{}, ctx.Err()
}
func (*fakeBackend) Watch(ctx context.Context, _ func()) error {
	<-ctx.Done()
	return ctx.Err()
}

// fakeLeases is a lease set whose first list has arrived and that has no
// peers. A send on change wakes the loop as a peer change does; setOwn
// changes our lease.
type fakeLeases struct {
	mu             sync.Mutex
	own            subnet.Lease
	synced, change chan struct{}
}

var _ leaseSource = (*fakeLeases)(nil)

func newFakeLeases(own subnet.Lease) *fakeLeases {
	l := &fakeLeases{own: own, synced: make(chan struct{}), change: make(chan struct{})}
	close(l.synced)
	return l
}

func (l *fakeLeases) Own() (subnet.Lease, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.own, true
}

func (l *fakeLeases) setOwn(own subnet.Lease) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.own = own
}

func (l *fakeLeases) Peers() []subnet.Lease         { return nil }
func (l *fakeLeases) PeersChanged() <-chan struct{} { return l.change }
func (l *fakeLeases) PeersSynced() <-chan struct{}  { return l.synced }

// fakeIPTables stands in for iptables, iptables-save and iptables-restore
// (nf_tables, 1.8.9): the tables are empty and any input is taken and
// appended to the file named by %s. It uses shell built-ins only, since PATH
// holds nothing else.
const fakeIPTables = `#!/bin/sh
if [ "$1" = --version ]; then echo "iptables v1.8.9 (nf_tables)"; exit 0; fi
while IFS= read -r l || [ -n "$l" ]; do printf '%%s\n' "$l" >>'%s'; done
`

// ownNetnsChildEnv, when set, makes a test run by runInOwnNetns the child,
// in a network namespace of its own; it holds the namespace the parent ran
// in ("net:[inode]"), which the child must not be in.
const ownNetnsChildEnv = "AGENTD_TEST_OWN_NETNS"

// TestIPTablesRetriedUntilAvailable: with masquerade and forward rules
// wanted, a missing iptables fails every reconcile pass, not just the first,
// and so keeps the agent not ready (under dockerd's FORWARD policy DROP the
// overlay would drop traffic without our rules); once iptables is there, the
// next pass installs the rules and the agent becomes ready.
//
// Only a PATH holding a fake iptables stands between the reconcile loop and
// the tables of the namespace it runs in, and the loop's commands run in the
// namespace of whichever thread starts them. So the test runs its own binary
// again in a network namespace it creates (which the kernel deletes when the
// child exits), and there it checks that each name resolves to the fake.
func TestIPTablesRetriedUntilAvailable(t *testing.T) {
	inOwnNetns(t, iptablesRetriedChild)
}

// inOwnNetns runs child as the test t in a network namespace of its own: t
// runs again as a child process there (runInOwnNetns), where this call
// checks that the namespace is not its parent's and runs child.
func inOwnNetns(t *testing.T, child func(t *testing.T)) {
	if parentNS := os.Getenv(ownNetnsChildEnv); parentNS != "" {
		checkOwnNetns(t, parentNS)
		child(t)
		return
	}
	runInOwnNetns(t, t.Name())
}

// runInOwnNetns runs the test named test of this binary again, as a child in
// a network namespace it creates (which the kernel deletes when the child
// exits), with ownNetnsChildEnv naming the namespace the parent ran in, and
// fails t unless the child ran the test and it passed without a skip.
func runInOwnNetns(t *testing.T, test string) {
	t.Helper()
	if os.Geteuid() != 0 {
		const msg = "needs root to create a network namespace (run the tests as root)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg + "; CI is set, so this is a failure")
		}
		t.Skip(msg)
	}
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	// The child is killed when the test ends and, by its parent-death
	// signal, when this process dies.
	out, err := testchild.Run(t.Context(), t, test,
		&syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}, ownNetnsChildEnv+"="+self)
	t.Logf("child, in a network namespace of its own:\n%s", out)
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	if err := testchild.Passed(out, test); err != nil {
		t.Fatal(err)
	}
}

// loopbackUp sets lo up in the child's namespace, for servers on 127.0.0.1.
func loopbackUp(t *testing.T) {
	t.Helper()
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatalf("lo up: %v", err)
	}
}

// checkOwnNetns fails the child test unless it runs in a network namespace
// other than parentNS, its parent's.
func checkOwnNetns(t *testing.T, parentNS string) {
	t.Helper()
	if self, err := os.Readlink("/proc/self/ns/net"); err != nil || self == parentNS {
		t.Fatalf("child in network namespace %s (err %v): not one of its own, refusing to touch iptables", self, err)
	}
}

// iptablesRetriedChild is the test proper, in a fresh network namespace.
func iptablesRetriedChild(t *testing.T) {
	bin := t.TempDir()
	t.Setenv("PATH", bin) // no iptables yet
	for _, name := range []string{"iptables", "iptables-save", "iptables-restore"} {
		if p, err := exec.LookPath(name); err == nil {
			t.Fatalf("%s resolves to %s before the fake is installed", name, p)
		}
	}
	restored := filepath.Join(t.TempDir(), "restored")

	a := &agent{
		cfg:    Config{IPMasq: true, IPTablesForwardRules: true, ResyncInterval: 50 * time.Millisecond},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	be, _, ctx := runReconcileLoop(t, a)

	// A pass has ended once the next one has called the backend.
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if n := be.passes.Load(); n < 4 {
			return fmt.Errorf("%d reconcile passes, waiting for 4", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if ready, why := a.health.ready(); ready || why != "peers not programmed yet" {
		t.Errorf("after %d passes without iptables: ready=%v (%s), want not ready: peers not programmed yet", be.passes.Load()-1, ready, why)
	}
	if st := a.obs.status(a.health); !strings.Contains(st.LastResyncError, "iptables") {
		t.Errorf("last reconcile error %q, want the missing iptables", st.LastResyncError)
	}

	// Each appears whole (the loop may be looking for it right now).
	staging := t.TempDir()
	for _, name := range []string{"iptables", "iptables-save", "iptables-restore"} {
		tmp := filepath.Join(staging, name)
		if err := os.WriteFile(tmp, fmt.Appendf(nil, fakeIPTables, restored), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(bin, name)); err != nil {
			t.Fatal(err)
		}
		if p, err := exec.LookPath(name); err != nil || p != filepath.Join(bin, name) {
			t.Fatalf("%s resolves to %q (err %v), want the fake %s", name, p, err, filepath.Join(bin, name))
		}
	}
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("with iptables installed: %v", err)
	}
	got, err := os.ReadFile(restored)
	if err != nil {
		t.Fatal(err)
	}
	for _, chain := range []string{iptables.MasqChain, iptables.ForwardChain} {
		if !strings.Contains(string(got), "-A "+chain+" ") {
			t.Errorf("no rule of %s restored; iptables-restore input:\n%s", chain, got)
		}
	}
}

// fakeIPTablesSaveFails stands in for iptables-save (nf_tables, 1.8.9) that
// cannot read the tables: it appends a line to the file named by %s and
// fails as iptables-save does without the right to read them.
const fakeIPTablesSaveFails = `#!/bin/sh
if [ "$1" = --version ]; then echo "iptables-save v1.8.9 (nf_tables)"; exit 0; fi
printf 'save %%s\n' "$*" >>'%s'
echo "iptables-save v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)" >&2
exit 1
`

// TestIPTablesCleanupFailureNotFatal: with both kinds of rules off, the
// cleanup of chains an earlier run may have left is tried on each pass, but
// its failure (here iptables-save failing) is logged once and neither fails
// the pass nor keeps the agent from becoming ready. Run like
// TestIPTablesRetriedUntilAvailable, in a network namespace of its own.
func TestIPTablesCleanupFailureNotFatal(t *testing.T) {
	inOwnNetns(t, iptablesCleanupChild)
}

func iptablesCleanupChild(t *testing.T) {
	calls := installFakeIPTables(t, fakeIPTables, fakeIPTables, fakeIPTablesSaveFails)

	logs := &logLines{}
	a := &agent{
		cfg:    Config{IPMasq: false, IPTablesForwardRules: false, ResyncInterval: 50 * time.Millisecond},
		log:    funcr.New(logs.add, funcr.Options{}),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	be, _, ctx := runReconcileLoop(t, a)

	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
		}
		if n := be.passes.Load(); n < 5 {
			return fmt.Errorf("%d reconcile passes, waiting for 5", n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("with no rules wanted and iptables-save failing: %v", err)
	}
	if st := a.obs.status(a.health); st.LastResyncError != "" {
		t.Errorf("last reconcile error %q, want none", st.LastResyncError)
	}
	got, err := os.ReadFile(calls)
	if err != nil {
		t.Fatal(err)
	}
	if saves := strings.Count(string(got), "save "); saves < 4 || strings.Count(string(got), "\n") != saves {
		t.Errorf("iptables calls:\n%s\nwant iptables-save retried on the passes (at least 4), nothing restored", got)
	}
	var cleanup []string
	for _, l := range logs.get() {
		if strings.Contains(l, "Permission denied") {
			cleanup = append(cleanup, l)
		}
	}
	if len(cleanup) != 1 {
		t.Errorf("the failing cleanup was logged %d times, want once:\n%s", len(cleanup), strings.Join(cleanup, "\n"))
	}
	t.Logf("logged: %s", strings.Join(cleanup, "\n"))
}

// TestIPTablesResync: every IPTablesResync the rules are checked on their
// own (flanneld's --iptables-resync), without a pass over the kernel, so
// that a chain another program makes later (dockerd's DOCKER-USER) gets our
// jump within it. Run like TestIPTablesRetriedUntilAvailable, in a network
// namespace of its own.
func TestIPTablesResync(t *testing.T) {
	inOwnNetns(t, iptablesResyncChild)
}

func iptablesResyncChild(t *testing.T) {
	be, _, ctx, read := recordedLoop(t, 50*time.Millisecond)
	saves := func() int { return strings.Count(read(), "call iptables-save -c -t nat") }
	// The loop may owe one pass when it becomes ready: its first pass
	// can follow the lease set's first list while the timer of the
	// start still fires. So the count starts again after each pass seen:
	// three checks must follow one another with no pass between them (a
	// pass begun between the two reads of the count shows in the second).
	passes := be.passes.Load()
	first := saves()
	restarts := 0
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		n := saves()
		if p := be.passes.Load(); p != passes {
			restarts += int(p - passes)
			passes = p
			first = saves()
			return fmt.Errorf("%d passes over the kernel during the iptables checks since the agent became ready, want none (the resync is an hour)", restarts)
		}
		if n < first+3 {
			return fmt.Errorf("%d checks of the nat table in a row, waiting for 3", n-first)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if restarts > 1 {
		t.Errorf("%d passes over the kernel during the iptables checks since the agent became ready, want none but the one the start may owe (the resync is an hour)", restarts)
	}
}

// recordedLoop runs the reconcile loop of an agent that wants masquerade and
// forward rules, over fakeIPTablesCalls, with a resync of an hour and
// iptResync (0: none), and waits until it is ready; read returns what the
// fake iptables recorded so far.
func recordedLoop(t *testing.T, iptResync time.Duration) (be *fakeBackend, leases *fakeLeases, ctx context.Context, read func() string) {
	t.Helper()
	calls := installFakeIPTables(t, fakeIPTablesCalls, fakeIPTablesCalls, fakeIPTablesCalls)
	read = func() string {
		b, err := os.ReadFile(calls)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return string(b)
	}
	a := &agent{
		cfg:    Config{IPMasq: true, IPTablesForwardRules: true, ResyncInterval: time.Hour, IPTablesResync: iptResync},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	be, leases, ctx = runReconcileLoop(t, a)
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return be, leases, ctx, read
}

// runReconcileLoop runs a's reconcile loop, with its lease held and
// subnet.env written, over a fake backend and one own lease of 10.244.0.0/16
// until the test ends, and returns the backend, the lease set and the loop's
// context.
func runReconcileLoop(t *testing.T, a *agent) (*fakeBackend, *fakeLeases, context.Context) {
	t.Helper()
	a.health.setLeaseHeld(true, "")
	a.health.setSubnetEnvWritten()
	be := &fakeBackend{}
	own := lease("10.244.1.0/24", "198.18.0.1")
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}

	leases := newFakeLeases(own)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.reconcileLoop(ctx, be, leases, netCfg, nil, func() error { return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return be, leases, ctx
}

// fakeIPTablesCalls stands in for iptables, iptables-save and
// iptables-restore (nf_tables, 1.8.9) with empty tables, and appends a line
// per call ("iptables-save -c -t nat") and each line of its input to the file
// named by %s.
const fakeIPTablesCalls = `#!/bin/sh
if [ "$1" = --version ]; then echo "iptables v1.8.9 (nf_tables)"; exit 0; fi
f='%s'
printf 'call %%s %%s\n' "${0##*/}" "$*" >>"$f"
while IFS= read -r l || [ -n "$l" ]; do printf '%%s\n' "$l" >>"$f"; done
`

// installFakeIPTables makes PATH a directory holding only iptables,
// iptables-restore and iptables-save, the scripts given in that order, each
// with %s replaced by the file it returns, where they record what they do.
func installFakeIPTables(t *testing.T, iptables, restore, save string) (calls string) {
	t.Helper()
	bin := t.TempDir()
	t.Setenv("PATH", bin)
	calls = filepath.Join(t.TempDir(), "calls")
	for name, script := range map[string]string{"iptables": iptables, "iptables-restore": restore, "iptables-save": save} {
		if err := os.WriteFile(filepath.Join(bin, name), fmt.Appendf(nil, script, calls), 0o755); err != nil {
			t.Fatal(err)
		}
		if p, err := exec.LookPath(name); err != nil || p != filepath.Join(bin, name) {
			t.Fatalf("%s resolves to %q (err %v), want the fake", name, p, err)
		}
	}
	return calls
}

// TestIPTablesNotOnPeerPasses: the rules depend on the network and our
// subnet only, so a pass woken by a peer change does not run iptables (one
// iptables-save per table per pass cost more than the pass's kernel work on
// nodes with kube-proxy's rules); a change of our subnet does, and so do the
// resyncs (TestIPTablesCleanupFailureNotFatal counts those). Run like
// TestIPTablesRetriedUntilAvailable, in a network namespace of its own.
func TestIPTablesNotOnPeerPasses(t *testing.T) {
	inOwnNetns(t, iptablesPeerPassesChild)
}

func iptablesPeerPassesChild(t *testing.T) {
	be, leases, ctx, read := recordedLoop(t, 0)
	first := read()
	if !strings.Contains(first, "call iptables-save") || !strings.Contains(first, "-d 10.244.1.0/24 ") {
		t.Fatalf("first pass: iptables calls and input\n%s\nwant iptables-save and rules for our subnet 10.244.1.0/24", first)
	}

	// Three peer changes: each send is taken by the loop, so the passes
	// for the first two have ended once the third is taken; the wait
	// for the pass count covers the third.
	passes := be.passes.Load()
	for range 3 {
		select {
		case leases.change <- struct{}{}:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	err := cluster.Eventually(ctx, 20*time.Second, func() error {
		if n := be.passes.Load(); n < passes+3 {
			return fmt.Errorf("%d passes after the peer changes, waiting for %d", n-passes, 3)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := read(); got != first {
		t.Errorf("passes for peer changes ran iptables:\n%s", strings.TrimPrefix(got, first))
	}

	leases.setOwn(lease("10.244.2.0/24", "198.18.0.1"))
	select {
	case leases.change <- struct{}{}:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if got := strings.TrimPrefix(read(), first); !strings.Contains(got, "-d 10.244.2.0/24 ") {
			return fmt.Errorf("no rule for our new subnet 10.244.2.0/24 restored; since the first pass:\n%s", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
