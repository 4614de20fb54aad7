package agent

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
)

// TestIPTablesDriftCounted: another program deleting our chains or jumps
// (firewalld reloading, `netfilter-persistent reload`, an iptables-restore
// of a set saved without them) is drift like a deleted route, and
// agentd_drift_repairs_total{kind="iptables"} and /status driftRepairs
// count its repairs; the rules' first installation is not counted. Before,
// only an "iptables chains rewritten" log line told of it: the metric had
// no iptables kind, and a host whose firewall wiped our rules every few
// minutes showed "drift repairs none". Real iptables, in a network
// namespace of the test's own.
func TestIPTablesDriftCounted(t *testing.T) {
	inOwnNetns(t, iptablesDriftCountedChild)
}

func iptablesDriftCountedChild(t *testing.T) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatalf("iptables not found (run `make deps` as root): %v", err)
	}
	a := &agent{
		cfg: Config{IPMasq: true, IPTablesForwardRules: true,
			ResyncInterval: time.Hour, IPTablesResync: time.Second},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	_, _, ctx := runReconcileLoop(t, a)
	mux := http.NewServeMux()
	a.obs.register(mux, a.health)
	metric := func() string {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		for l := range strings.Lines(rec.Body.String()) {
			if strings.HasPrefix(l, `agentd_drift_repairs_total{kind="iptables"} `) {
				return strings.TrimSpace(l)
			}
		}
		return "no iptables series"
	}
	jumps := func() error {
		out, err := exec.Command(ipt + "-save").CombinedOutput()
		if err != nil {
			return fmt.Errorf("iptables-save: %v: %s", err, out)
		}
		for _, j := range []string{"-A FORWARD -m comment --comment \"agentd forward\" -j AGENTD-FWD", "-A POSTROUTING -m comment --comment \"agentd masq\" -j AGENTD-POSTRTG"} {
			if !strings.Contains(string(out), j+"\n") {
				return fmt.Errorf("no %q in:\n%s", j, out)
			}
		}
		return nil
	}
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s", why)
		}
		return jumps()
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := metric(), `agentd_drift_repairs_total{kind="iptables"} 0`; got != want {
		t.Errorf("after the first installation: %s, want %s", got, want)
	}

	// What `firewall-cmd --reload` or an iptables-restore of a saved set
	// without our rules leaves: both tables without anything of ours.
	for _, table := range []string{"filter", "nat"} {
		for _, args := range [][]string{{"-F"}, {"-X"}} {
			if out, err := exec.Command(ipt, append([]string{"-t", table}, args...)...).CombinedOutput(); err != nil {
				t.Fatalf("iptables -t %s %v: %v: %s", table, args, err, out)
			}
		}
	}
	wiped := time.Now()
	if err := cluster.Eventually(ctx, 20*time.Second, jumps); err != nil {
		t.Fatalf("not repaired: %v", err)
	}
	t.Logf("repaired %v after the wipe", time.Since(wiped).Round(time.Millisecond))
	err = cluster.Eventually(ctx, 5*time.Second, func() error {
		if got, want := metric(), `agentd_drift_repairs_total{kind="iptables"} 1`; got != want {
			return fmt.Errorf("%s, want %s (one check rewrote filter and nat)", got, want)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if got := a.obs.status(a.health).DriftRepairs["iptables"]; got != 1 {
		t.Errorf("/status driftRepairs iptables %d, want 1", got)
	}
}

// TestIPTablesDockerUserLaterNotDrift: dockerd started after agentd (the
// order the Docker drop-in sets, so on every Docker host at every boot)
// makes DOCKER-USER, which then gets our jump. Nothing of ours was altered:
// that is no drift repair. Our jump deleted from a DOCKER-USER that was
// there already is one. Before, every Docker host counted one iptables
// repair a boot, logged as "jumps from DOCKER-USER differ (have 0, want
// 1)": a false "someone altered our rules". Real iptables, in a network
// namespace of the test's own; the checks are called one after the other,
// so that each count is read after its check.
func TestIPTablesDockerUserLaterNotDrift(t *testing.T) {
	inOwnNetns(t, dockerUserLaterChild)
}

func dockerUserLaterChild(t *testing.T) {
	ipt, err := exec.LookPath("iptables")
	if err != nil {
		t.Fatalf("iptables not found (run `make deps` as root): %v", err)
	}
	a := &agent{
		cfg:    Config{IPMasq: true, IPTablesForwardRules: true},
		log:    testr.New(t),
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	netCfg := &subnet.Config{EnableIPv4: true, Network: netip.MustParsePrefix("10.244.0.0/16")}
	own := lease("10.244.1.0/24", "198.18.0.1")
	check := func(what string, wantRepairs int64) {
		t.Helper()
		if err := a.reconcileIPTables(t.Context(), netCfg, own); err != nil {
			t.Fatalf("%s: check: %v", what, err)
		}
		if got := a.obs.status(a.health).DriftRepairs["iptables"]; got != wantRepairs {
			t.Errorf("%s: driftRepairs iptables %d, want %d", what, got, wantRepairs)
		}
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipt, args...).CombinedOutput(); err != nil {
			t.Fatalf("iptables %v: %v: %s", args, err, out)
		}
	}
	const ourJump = `-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD`
	hasJump := func(what string) {
		t.Helper()
		out, err := exec.Command(ipt+"-save", "-t", "filter").CombinedOutput()
		if err != nil {
			t.Fatalf("iptables-save: %v: %s", err, out)
		}
		if !strings.Contains(string(out), ourJump+"\n") {
			t.Fatalf("%s: no %q in:\n%s", what, ourJump, out)
		}
	}

	check("first installation", 0)
	// dockerd's start: DOCKER-USER (Docker 28 leaves it empty), jumped
	// to first from FORWARD.
	run("-N", "DOCKER-USER")
	run("-I", "FORWARD", "1", "-j", "DOCKER-USER")
	check("DOCKER-USER made after the first check", 0)
	hasJump("DOCKER-USER made after the first check")
	check("nothing changed", 0)
	run("-F", "DOCKER-USER")
	check("our jump deleted from DOCKER-USER", 1)
	hasJump("our jump deleted from DOCKER-USER")
}
