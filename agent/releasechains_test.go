package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestRemoveOurChainsIptablesBroken: an iptables that is there but cannot
// be run (its --version fails, also when it stands in for an
// --iptables-mode command the host does not have) fails the removal of
// our chains, which may be left:
// before, that was "iptables not available", at -v=2, and --release-lease
// exited 0 with AGENTD-* chains in place. With no iptables command at all
// there can be no chains of ours, and the line saying so is at -v=0.
func TestRemoveOurChainsIptablesBroken(t *testing.T) {
	fake := func(t *testing.T, names ...string) {
		dir := t.TempDir()
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\necho broken >&2\nexit 1\n"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		t.Setenv("PATH", dir)
	}
	for _, c := range []struct {
		name, mode string
		bins       []string
		want       string // "" for no error
	}{
		{"version fails", "", []string{"iptables"}, "delete our iptables chains: "},
		{"legacy missing", "legacy", []string{"iptables", "iptables-nft"}, "/iptables: could not get iptables version"},
		{"none", "legacy", nil, ""},
		{"none, default mode", "", nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			fake(t, c.bins...)
			var logs logLines
			cfg := &Config{IPTablesMode: c.mode}
			err := removeOurChains(t.Context(), funcr.New(logs.add, funcr.Options{}), cfg)
			if c.want == "" {
				if err != nil {
					t.Errorf("removeOurChains with no iptables = %v, want nil", err)
				}
				if !strings.Contains(strings.Join(logs.get(), "\n"), "no iptables command here, so no iptables chains of ours to delete") {
					t.Errorf("removeOurChains with no iptables logged %q, want it said at -v=0", logs.get())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("removeOurChains with %v in PATH, mode %q = %v, want an error with %q", c.bins, c.mode, err, c.want)
			}
			t.Logf("%v", err)
		})
	}
}
