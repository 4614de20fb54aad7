package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/tests/cluster"
	"golang.org/x/sys/unix"
)

// TestStateDirReadOnlyWhileRunning: the state dir's filesystem turns
// read-only while the agent runs (ext4's errors=remount-ro after a disk
// error), with no subnet.env kept by a run that lost its subnet in it.
// Writing subnet.env (here once its own filesystem is mended; also at each
// new underlay MTU) removes that kept file if it is there, and says nothing
// when it is not. Before, unlink(2) failed with EROFS before it looked for
// the file, and each write of subnet.env logged `cannot remove the
// subnet.env kept by a run that lost its subnet; a start without subnet.env
// would prefer its subnet` for a file that was not there.
//
// The state dir and subnet.env live on small tmpfs mounts in the test's
// temporary directory, unmounted at the end.
func TestStateDirReadOnlyWhileRunning(t *testing.T) {
	cluster.RunInHost(t, map[string]string{
		"/coreos.com/network/config": `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`,
	}, stateDirROChild)
}

func stateDirROChild(t *testing.T, etcd string) {
	cfg := hostConfig(t, etcd, "/coreos.com/network")
	mount := func(name string) string {
		dir := filepath.Join(t.TempDir(), name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
			t.Fatalf("mount a tmpfs on %s: %v", dir, err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", dir, err)
			}
		})
		return dir
	}
	run, state := mount("run"), mount("state")
	cfg.SubnetFile = filepath.Join(run, "subnet.env")
	cfg.StateDir = state
	// subnet.env cannot be written at first, so that the state dir turns
	// read-only before the write that succeeds.
	if err := fill(run); err != nil {
		t.Fatal(err)
	}

	logs := &logLines{}
	log := childLogger(t, logs)
	a := newFakeAgent(cfg, log)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	defer runChildAgent(t, ctx, a)()
	readyz := func(want int, reason string) error {
		code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
		switch {
		case err != nil:
			return err
		case code != want || !strings.Contains(string(body), reason):
			return fmt.Errorf("/readyz %d %q, want %d %q", code, body, want, reason)
		}
		return nil
	}
	// Past the state dir's lock and host ID: the lease is held.
	if err := cluster.Eventually(ctx, 30*time.Second, func() error { return readyz(503, "no space left on device") }); err != nil {
		t.Fatal(err)
	}
	// A read-only bind mount on top: the agent's lock file, open for
	// writing, keeps the tmpfs itself from being remounted read-only.
	if err := unix.Mount(state, state, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s: %v", state, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(state, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount the bind mount %s: %v", state, err)
		}
	})
	if err := unix.Mount("", state, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("remount %s read-only: %v", state, err)
	}
	if err := os.Remove(filepath.Join(run, "filler")); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Eventually(ctx, 30*time.Second, func() error { return readyz(200, "ok") }); err != nil {
		t.Fatalf("after subnet.env's filesystem was mended: %v", err)
	}
	for _, l := range logs.get() {
		if strings.Contains(l, "cannot remove the subnet.env kept by a run that lost its subnet") {
			t.Errorf("logged for a file that is not there: %s", l)
		}
	}
}
