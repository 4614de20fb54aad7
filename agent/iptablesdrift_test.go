package agent

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

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
