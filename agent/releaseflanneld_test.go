package agent

import (
	"os"
	"strconv"
	"testing"

	"github.com/agentd/agentd/tests/cluster"
)

// TestReleaseLeaseRefusedBesideFlanneld: --release-lease in a network
// namespace where flanneld runs (a host gone back to flanneld, which runs
// on agentd's flannel.<VNI> and renews agentd's lease) is refused before
// it releases anything, naming flanneld, as an agent's start is; a
// flanneld of another namespace (this test's) is not named. Before, it
// went on to etcd (here none, so it failed on that), and with etcd
// released the lease flanneld renews and deleted flanneld's device.
func TestReleaseLeaseRefusedBesideFlanneld(t *testing.T) {
	cluster.RequireRoot(t)
	cfg := stateLockConfig(t)
	cfg.ReleaseLease = true
	const env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(cfg.SubnetFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	runBesideFlanneld(t, cfg, "--release-lease", func(here int) []string {
		return []string{"flanneld (pid " + strconv.Itoa(here) + ") runs in this network namespace: nothing released", "stop flanneld first"}
	})
	if b, err := os.ReadFile(cfg.SubnetFile); err != nil || string(b) != env {
		t.Errorf("subnet.env after the refused release: %q, %v; want it unchanged", b, err)
	}
}
