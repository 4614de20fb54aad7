package agent

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"golang.org/x/sys/unix"
)

// TestSubnetEnvRetryNamedPipe: while subnet.env cannot be written (here a
// directory root may not write to without CAP_DAC_OVERRIDE, which
// agentd.service does not keep), the retry reads the subnet.env there to
// remove it if it names another subnet. A named pipe there was read with
// os.ReadFile, whose open waits for a writer: the retries stopped, and a
// stop did not end the agent (before 2026-12-06: writeSubnetEnv had not
// returned 10 s after its context ended). The read now refuses it, as
// subnet.env's other readers do, and the retries go on until the stop.
func TestSubnetEnvRetryNamedPipe(t *testing.T) {
	cluster.RequireRoot(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "subnet.env")
	if err := unix.Mkfifo(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })

	logs := &logLines{}
	log := funcr.New(logs.add, funcr.Options{})
	a := &agent{cfg: Config{SubnetFile: path, StateDir: dir}, log: log, health: newHealth(log), obs: newObserver()}
	a.health.notify = func(string) (bool, error) { return false, nil }
	env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := withoutDACOverride(func() error {
		return a.writeSubnetEnv(ctx, env, "containers on this host get no address until it is written", nil)
	})

	// The first failure is logged before the retry reads the pipe.
	failed := func() error {
		for _, l := range logs.get() {
			if strings.Contains(l, "cannot write subnet.env") {
				if !strings.Contains(l, "permission denied") {
					return errors.New("the write failed for another reason: " + l)
				}
				return nil
			}
		}
		return errors.New("no failure to write subnet.env logged")
	}
	if err := cluster.Eventually(context.Background(), 10*time.Second, failed); err != nil {
		select {
		case err := <-done:
			t.Fatalf("writeSubnetEnv returned %v", err)
		default:
		}
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("writeSubnetEnv after the stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		// Let the read go: a writer's open ends its wait, and its close
		// gives it an end of file.
		if f, err := os.OpenFile(path, os.O_WRONLY|unix.O_NONBLOCK, 0); err == nil {
			f.Close()
		}
		<-done
		t.Fatalf("writeSubnetEnv did not return within 10 s of the stop: it waited in the read of the named pipe at %s", path)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
		t.Errorf("%s after the retries: %v, %v; want the named pipe left", path, fi, err)
	}
}
