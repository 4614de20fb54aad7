package agent

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/agentd/agentd/backend/iptables"
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
			addOurChains(t, host)
			t.Setenv("PATH", dir)

			removeOurChainsAll(t, &Config{}, "without --iptables-mode on a host with iptables-"+host+" only", save, save,
				`"mode"="unset: the iptables command's" "missing"="iptables" "command"="iptables-`+host+`"`)
		})
	}
}
