package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestSecondAgentSameHealthAddr: a second agent in the network namespace
// of a running one, given the same --healthz-addr (its own state dir, as
// for a second overlay network), is refused by the namespace's claim,
// naming the running agent's pid, rather than failing at the listen with
// "address already in use", which says nothing of the agent there. The
// running agent is this process's claim and a listener on the address.
func TestSecondAgentSameHealthAddr(t *testing.T) {
	cluster.RequireRoot(t)
	inNewNetns(t, func() {
		claim, _, err := claimNetns()
		if err != nil || claim == nil {
			t.Errorf("the running agent's claim: %v", err)
			return
		}
		defer claim.Close()
		ln, err := net.Listen("tcp", ":8471")
		if err != nil {
			t.Errorf("the running agent's health server: %v", err)
			return
		}
		defer ln.Close()

		cfg := stateLockConfig(t)
		cfg.HealthzAddr = ":8471"
		err = Run(t.Context(), cfg)
		if _, ok := errors.AsType[*agentInNetnsError](err); !ok ||
			!strings.Contains(err.Error(), fmt.Sprintf("another agentd (pid %d) runs in this network namespace", os.Getpid())) {
			t.Errorf("second agent with the same --healthz-addr: %v, want the namespace's claim refusing it, naming pid %d", err, os.Getpid())
		}
		// Refused before it did anything: its state dir holds the lock
		// file alone.
		if ents, err := os.ReadDir(cfg.StateDir); err != nil || len(ents) != 1 || ents[0].Name() != lockFile {
			t.Errorf("state dir %s after the refusal: %v, %v; want %s alone", filepath.Base(cfg.StateDir), ents, err, lockFile)
		}
	})
}
