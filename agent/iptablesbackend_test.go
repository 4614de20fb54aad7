package agent

import (
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend/iptables"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
)

// TestIPTablesOtherBackendLeftovers: a run with --ip-masq in one iptables
// backend (legacy or nf_tables) leaves its chains there; the next run, told
// to use the other backend (--iptables-mode changed, or the host's
// `iptables` switched) and with --ip-masq off, removes them, so that the old
// masquerade does not go on: the kernel runs the chains of both backends.
// Other software's rules in that backend stay. Run like
// TestIPTablesRetriedUntilAvailable, in a network namespace of its own.
func TestIPTablesOtherBackendLeftovers(t *testing.T) {
	inOwnNetns(t, iptablesOtherBackendChild)
}

func iptablesOtherBackendChild(t *testing.T) {
	for _, bin := range []string{"iptables-legacy", "iptables-legacy-save", "iptables-nft", "iptables-nft-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not found (make deps installs Debian's iptables, with both backends)", bin)
		}
	}
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, tc := range []struct{ left, now, leftSave, nowSave string }{
		{iptables.ModeLegacy, iptables.ModeNFT, "iptables-legacy-save", "iptables-nft-save"},
		{iptables.ModeNFT, iptables.ModeLegacy, "iptables-nft-save", "iptables-legacy-save"},
	} {
		t.Run("left in "+tc.left, func(t *testing.T) {
			run := func(args ...string) string {
				t.Helper()
				out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
				if err != nil {
					t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
				}
				return string(out)
			}
			// Leave the namespace's tables as they were for the next case.
			t.Cleanup(func() {
				for _, save := range []string{tc.leftSave, tc.nowSave} {
					m, err := iptables.New(iptables.IPv4, testr.New(t), iptables.Options{Mode: strings.TrimSuffix(strings.TrimPrefix(save, "iptables-"), "-save")})
					if err == nil {
						err = m.Remove()
					}
					if err != nil {
						t.Errorf("clean up %s: %v", save, err)
					}
				}
				run("iptables-"+tc.left, "-D", "FORWARD", "-s", "198.19.99.0/24", "-j", "DROP")
			})

			// The earlier run: masquerade and forward rules in tc.left,
			// beside a rule of other software.
			run("iptables-"+tc.left, "-A", "FORWARD", "-s", "198.19.99.0/24", "-j", "DROP")
			earlier, err := iptables.New(iptables.IPv4, testr.New(t), iptables.Options{Mode: tc.left})
			if err != nil {
				t.Fatal(err)
			}
			rules := append(iptables.MasqRules(network, netip.MustParsePrefix("10.244.1.0/24"), earlier.RandomFully()), iptables.ForwardRules(network)...)
			if _, err := earlier.Reconcile(rules); err != nil {
				t.Fatal(err)
			}

			a := &agent{
				cfg:    Config{IPMasq: false, IPTablesForwardRules: true, IPTablesMode: tc.now, ResyncInterval: time.Hour},
				log:    testr.New(t),
				health: newHealth(testr.New(t)),
				obs:    newObserver(),
			}
			_, _, ctx := runReconcileLoop(t, a)
			err = cluster.Eventually(ctx, 20*time.Second, func() error {
				if ready, why := a.health.ready(); !ready {
					return fmt.Errorf("not ready: %s (last reconcile error: %s)", why, a.obs.status(a.health).LastResyncError)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			left := run(tc.leftSave)
			if strings.Contains(left, iptables.ChainPrefix) {
				t.Errorf("%s still holds the earlier run's chains:\n%s", tc.leftSave, left)
			}
			if !strings.Contains(left, "-A FORWARD -s 198.19.99.0/24 -j DROP") {
				t.Errorf("%s lost the other software's rule:\n%s", tc.leftSave, left)
			}
			now := run(tc.nowSave)
			if !strings.Contains(now, ":"+iptables.ForwardChain+" ") || strings.Contains(now, iptables.MasqChain) {
				t.Errorf("%s, want %s and no %s:\n%s", tc.nowSave, iptables.ForwardChain, iptables.MasqChain, now)
			}
		})
	}
}
