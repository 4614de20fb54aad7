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

// TestRemoveOurChainsModeUnsetCommandMissing: --release-lease without
// --iptables-mode on a host that has no iptables command, only one
// backend's own (iptables-nft or iptables-legacy), deletes our chains with
// that one, and its line says what the unset mode is (the iptables
// command's backend). Before, the line said mode="" beside
// missing="iptables". Run in a network namespace of its own, with the real
// commands linked into a PATH of the host's kind.
func TestRemoveOurChainsModeUnsetCommandMissing(t *testing.T) {
	inOwnNetns(t, removeOurChainsModeUnsetCommandMissingChild)
}

func removeOurChainsModeUnsetCommandMissingChild(t *testing.T) {
	network := netip.MustParsePrefix("10.244.0.0/16")
	for _, host := range []string{iptables.ModeNFT, iptables.ModeLegacy} {
		t.Run("host with iptables-"+host+" only", func(t *testing.T) {
			dir := t.TempDir()
			var save string
			for _, suffix := range []string{"", "-save", "-restore"} {
				name := "iptables-" + host + suffix
				p, err := exec.LookPath(name)
				if err != nil {
					t.Fatalf("%s not found (make deps installs Debian's iptables, with both backends)", name)
				}
				if suffix == "-save" {
					save = p
				}
				if err := os.Symlink(p, filepath.Join(dir, name)); err != nil {
					t.Fatal(err)
				}
			}
			// The agent's chains, in the host's backend.
			earlier, err := iptables.New(iptables.IPv4, testr.New(t), iptables.Options{Mode: host})
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
			t.Setenv("PATH", dir)

			var logs logLines
			err = removeOurChains(t.Context(), funcr.New(logs.add, funcr.Options{}), &Config{})
			t.Logf("logged %q", logs.get())
			if err != nil {
				t.Fatalf("removeOurChains without --iptables-mode on a host with iptables-%s only = %v, want nil", host, err)
			}
			out, err := exec.Command(save).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v: %s", save, err, out)
			}
			if strings.Contains(string(out), iptables.ChainPrefix) {
				t.Errorf("%s still holds our chains:\n%s", save, out)
			}
			all := strings.Join(logs.get(), "\n")
			for _, want := range []string{
				`"mode"="unset: the iptables command's" "missing"="iptables" "command"="iptables-` + host + `"`,
				"deleted our iptables chains (AGENTD-*) and the jumps into them",
			} {
				if !strings.Contains(all, want) {
					t.Errorf("removeOurChains logged %q, want a line with %q", logs.get(), want)
				}
			}
		})
	}
}
