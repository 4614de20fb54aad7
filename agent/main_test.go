package agent

import (
	"os"
	"testing"

	"github.com/agentd/agentd/backend/udp"
)

func TestMain(m *testing.M) {
	// The udp backend's descriptor keeper is this binary run again
	// (/proc/self/exe), as it is agentd in production.
	if udp.IsKeeper() {
		os.Exit(udp.RunKeeper())
	}
	os.Exit(m.Run())
}

// inHostChildEnv is set in the environment of the child that
// cluster.RunInHost starts (tests/cluster/childtest.go's inHostEnv).
const inHostChildEnv = "AGENTD_TEST_IN_HOST"

// parallel marks t parallel, unless this process is a child that a test
// started to run t alone (cluster.RunInHost, inOwnNetns): the child has
// the process to itself, and may set its environment (t.Setenv), which a
// parallel test may not.
//
// A test marked parallel owns everything it changes: its own cluster of
// namespaces (own etcd, own addresses), a namespace of its own, temporary
// directories, and listeners on port 0 or on fixed ports in its own
// namespace only. It sets no environment variable and no package variable
// in this process, and needs no process-wide count (allocations,
// goroutines, open files) to hold still. Tests that cannot say so (t.Setenv,
// testing.AllocsPerRun, iptables-legacy's /run/xtables.lock, which every
// namespace shares) stay sequential; they run before the parallel ones.
func parallel(t *testing.T) {
	t.Helper()
	if os.Getenv(ownNetnsChildEnv) != "" || os.Getenv(inHostChildEnv) != "" {
		return
	}
	t.Parallel()
}
