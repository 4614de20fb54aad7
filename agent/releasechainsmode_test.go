package agent

import (
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend/iptables"
	"github.com/go-logr/logr/funcr"
	"github.com/go-logr/logr/testr"
)

// TestRemoveOurChainsModeCommandMissing: --release-lease with an
// --iptables-mode whose command the host does not have (legacy on a host
// with only the nft backend's commands, nft on one with only legacy's)
// deletes our chains with the command the host has. Before, it failed
// naming the missing command (`delete our iptables chains:
// iptables-legacy: executable file not found`), exit 1, with the chains in
// place, though they can only be in the backend whose command is here.
// Run in a network namespace of its own, with the real commands linked
// into a PATH of the host's kind.
func TestRemoveOurChainsModeCommandMissing(t *testing.T) {
	inOwnNetns(t, removeOurChainsModeCommandMissingChild)
}

func removeOurChainsModeCommandMissingChild(t *testing.T) {
	for _, tc := range []struct{ mode, host string }{
		{iptables.ModeLegacy, iptables.ModeNFT},
		{iptables.ModeNFT, iptables.ModeLegacy},
	} {
		t.Run("mode "+tc.mode+" on a host with "+tc.host+" only", func(t *testing.T) {
			save := "iptables-" + tc.host + "-save"
			real := map[string]string{}
			for _, name := range []string{"iptables-" + tc.host, save, "iptables-" + tc.host + "-restore"} {
				p, err := exec.LookPath(name)
				if err != nil {
					t.Fatalf("%s not found (make deps installs Debian's iptables, with both backends)", name)
				}
				real[name] = p
			}
			addOurChains(t, tc.host)
			// The host's commands: iptables, iptables-save and
			// iptables-restore of its one backend, and that backend's
			// own names; none of the other backend.
			dir := t.TempDir()
			for _, suffix := range []string{"", "-save", "-restore"} {
				target := real["iptables-"+tc.host+suffix]
				for _, name := range []string{"iptables" + suffix, "iptables-" + tc.host + suffix} {
					if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
						t.Fatal(err)
					}
				}
			}
			t.Setenv("PATH", dir)

			removeOurChainsAll(t, &Config{IPTablesMode: tc.mode}, "with --iptables-mode="+tc.mode+" on a host with "+tc.host+" only", save, real[save],
				`"missing"="iptables-`+tc.mode+`" "command"="iptables"`)
		})
	}
}

// addOurChains puts the agent's chains in the tables of backend mode's
// iptables, as an agent of network 10.244.0.0/16 at 10.244.1.0/24 with
// --ip-masq leaves them, and removes them when t ends.
func addOurChains(t *testing.T, mode string) {
	t.Helper()
	network := netip.MustParsePrefix("10.244.0.0/16")
	earlier, err := iptables.New(iptables.IPv4, testr.New(t), iptables.Options{Mode: mode})
	if err != nil {
		t.Fatal(err)
	}
	rules := append(iptables.MasqRules(network, netip.MustParsePrefix("10.244.1.0/24"), earlier.RandomFully()), iptables.ForwardRules(network)...)
	if _, err := earlier.Reconcile(rules); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := earlier.Remove(); err != nil {
			t.Errorf("clean up: %v", err)
		}
	})
}

// removeOurChainsAll runs removeOurChains with cfg on a host that what
// describes, after addOurChains: it must return nil, leave none of our
// chains in the output of the host backend's iptables-save (save, as
// messages name it, at path), and log a line with line and one saying the
// chains were deleted.
func removeOurChainsAll(t *testing.T, cfg *Config, what, save, path, line string) {
	t.Helper()
	var logs logLines
	err := removeOurChains(t.Context(), funcr.New(logs.add, funcr.Options{}), cfg)
	t.Logf("logged %q", logs.get())
	if err != nil {
		t.Fatalf("removeOurChains %s = %v, want nil", what, err)
	}
	out, err := exec.Command(path).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", save, err, out)
	}
	if strings.Contains(string(out), iptables.ChainPrefix) {
		t.Errorf("%s still holds our chains:\n%s", save, out)
	}
	all := strings.Join(logs.get(), "\n")
	for _, want := range []string{
		line,
		"deleted our iptables chains (AGENTD-*) and the jumps into them",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("removeOurChains logged %q, want a line with %q", logs.get(), want)
		}
	}
}
