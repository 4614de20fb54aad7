package agent

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"

	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/tests/cluster"
)

// TestIPTablesZeroedCountersNothingHappens: an operator's `iptables -t nat
// -Z` resets our rules' counters as a restore of saved rules does, and the
// check after it wrote nat again (to stamp the rules), logged `iptables
// chains rewritten … restored by another program` and counted a drift
// repair. Counters cannot tell the two apart (see iptables.Restamped); what a
// reload's flush leaves behind can: the rules are stamped again as before
// and the conntrack table read, but with no flow found that left
// unmasqueraded nothing is logged at the default verbosity nor counted.
// nft and legacy.
func TestIPTablesZeroedCountersNothingHappens(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) { zeroedCountersChild(t, iptables.ModeNFT) })
}

func TestIPTablesZeroedCountersNothingHappensLegacy(t *testing.T) {
	inOwnNetns(t, func(t *testing.T) { zeroedCountersChild(t, iptables.ModeLegacy) })
}

func zeroedCountersChild(t *testing.T, mode string) {
	ipt, err := exec.LookPath("iptables-" + mode)
	if err != nil {
		t.Fatalf("iptables-%s not found (run `make deps` as root): %v", mode, err)
	}
	save := ipt + "-save"
	var mu sync.Mutex
	var logged []string
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, args)
	}, funcr.Options{Verbosity: 2})
	const resync = 100 * time.Millisecond
	a := &agent{
		cfg:    Config{IPMasq: true, ResyncInterval: time.Hour, IPTablesResync: resync, IPTablesMode: mode},
		log:    log,
		health: newHealth(testr.New(t)),
		obs:    newObserver(),
	}
	runReconcileLoop(t, a)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// stamped: our jump from POSTROUTING carries the stamp.
	stamped := func() error {
		out, err := exec.Command(save, "-c", "-t", "nat").Output()
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "-A POSTROUTING") && strings.Contains(l, iptables.MasqChain) {
				if strings.Contains(l, ":1099511627776] ") {
					return nil
				}
				return fmt.Errorf("jump unstamped: %s", l)
			}
		}
		return fmt.Errorf("no jump from POSTROUTING in\n%s", out)
	}
	err = cluster.Eventually(ctx, 20*time.Second, func() error {
		if ready, why := a.health.ready(); !ready {
			return fmt.Errorf("not ready: %s", why)
		}
		return stamped()
	})
	if err != nil {
		t.Fatal(err)
	}
	repairs := iptablesRepairs(t, a.obs)
	mu.Lock()
	logged = nil
	mu.Unlock()
	if out, err := exec.Command(ipt, "-t", "nat", "-Z").CombinedOutput(); err != nil {
		t.Fatalf("iptables -t nat -Z: %v: %s", err, out)
	}
	// The check after it sees the counters gone back and stamps the rules
	// again (at -v=2). Asking iptables-save whether the jump lost its stamp
	// would race with that check, which comes every 100 ms.
	restamped := func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range logged {
			if strings.Contains(l, `"msg"="iptables rules stamped again"`) && strings.Contains(l, `"table"="nat"`) {
				return nil
			}
		}
		return fmt.Errorf("no line `iptables rules stamped again` for nat after iptables -t nat -Z")
	}
	if err := cluster.Eventually(ctx, 10*time.Second, restamped); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 10*time.Second, stamped); err != nil {
		t.Fatal(err)
	}
	if got := iptablesRepairs(t, a.obs); got != repairs {
		t.Errorf(`agentd_drift_repairs_total{kind="iptables"} %v after iptables -t nat -Z, want %v`, got, repairs)
	}
	mu.Lock()
	defer mu.Unlock()
	var atDefault []string
	for _, l := range logged {
		// Info lines begin with their level; funcr gives an Error line
		// none, and it is at the default verbosity too.
		if strings.HasPrefix(l, `"level"=0 `) || !strings.HasPrefix(l, `"level"=`) {
			atDefault = append(atDefault, l)
		}
	}
	if len(atDefault) > 0 {
		t.Errorf("logged at the default verbosity after iptables -t nat -Z:\n%s\nwant nothing", strings.Join(atDefault, "\n"))
	}
}
