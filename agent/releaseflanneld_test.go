package agent

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

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
	start := fakeFlanneld(t)
	elsewhere, err := start()
	if err != nil {
		t.Fatal(err)
	}
	cfg := stateLockConfig(t)
	cfg.ReleaseLease = true
	const env = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	if err := os.WriteFile(cfg.SubnetFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	inNewNetns(t, func() {
		here, err := start()
		if err != nil {
			t.Error(err)
			return
		}
		// Bounded: a release that does not look for flanneld waits for
		// the etcd that is not there.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		err = Run(ctx, cfg)
		for _, want := range []string{"flanneld (pid " + strconv.Itoa(here.Process.Pid) + ") runs in this network namespace: nothing released",
			"stop flanneld first"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("--release-lease beside flanneld (pid %d here, %d elsewhere) = %v, want it refused saying %q", here.Process.Pid, elsewhere.Process.Pid, err, want)
			}
		}
	})
	if b, err := os.ReadFile(cfg.SubnetFile); err != nil || string(b) != env {
		t.Errorf("subnet.env after the refused release: %q, %v; want it unchanged", b, err)
	}
}
