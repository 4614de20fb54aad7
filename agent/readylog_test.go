package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
)

// TestFirstSnapshotLoggedBeforeReady: the pass that programs the first peer
// snapshot, the last condition of readiness here, logs so before /readyz
// says ready: whoever sees the agent ready finds the line. It was logged
// just after, so a reader of /readyz, then of the log, could miss it.
func TestFirstSnapshotLoggedBeforeReady(t *testing.T) {
	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	h, _ := testHealth(t)
	a := &agent{cfg: Config{ResyncInterval: time.Hour}, log: log, health: h, obs: newObserver(), iptDone: true}
	_, _, ctx := runReconcileLoop(t, a)
	if err := cluster.Eventually(ctx, 10*time.Second, a.readyErr); err != nil {
		t.Fatal(err)
	}
	if n := logs.count("first peer snapshot programmed"); n != 1 {
		t.Errorf("ready, with %d lines saying the first peer snapshot is programmed, want 1: %q", n, logs.get())
	}
}

// TestSubnetEnvWrittenBeforeReady: when subnet.env's write makes the agent
// ready (READY=1, /readyz), /status has its MTU already, the write is
// logged and the subnet.env kept by a run that lost its subnet is gone.
// The MTU was set just after readiness: agentctl status, asked once
// systemd said the agent started, could show none.
func TestSubnetEnvWrittenBeforeReady(t *testing.T) {
	dir := t.TempDir()
	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	a := &agent{cfg: Config{SubnetFile: filepath.Join(dir, "subnet.env"), StateDir: dir}, log: log, health: newHealth(log), obs: newObserver()}
	lost := lostSubnetPath(dir)
	if err := os.WriteFile(lost, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	var atReady string
	a.health.notify = func(state string) (bool, error) {
		if slices.Contains(strings.Split(state, "\n"), "READY=1") {
			_, err := os.Stat(lost)
			atReady = fmt.Sprintf("mtu %d, %d lines of the write, %s left: %v",
				a.obs.status(a.health).MTU, logs.count(`"wrote subnet.env"`), lostSubnetFile, !errors.Is(err, os.ErrNotExist))
		}
		return true, nil
	}
	a.health.setLeaseHeld(true, "")
	a.health.setPeersProgrammed()
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	if err := a.writeSubnetEnv(context.Background(), env, "containers on this host get no address until it is written", nil); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("mtu 1450, 1 lines of the write, %s left: false", lostSubnetFile); atReady != want {
		t.Errorf("at READY=1: %q, want %q", atReady, want)
	}
}
