package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet/subnetenv"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/testr"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// movedFrom is the subnet a previous run's subnet.env names in the "moved"
// case, held by another host meanwhile.
var movedFrom = netip.MustParsePrefix("10.244.99.0/24")

// TestSubnetEnvDiskFault: with the filesystem of subnet.env full or
// read-only, or a directory where subnet.env goes, the agent holds its lease and programs its peers but is not
// ready, and /readyz names the file and the cause; it keeps running, leaves
// no temporary file behind, and writes subnet.env by itself once the
// filesystem is mended, then is ready. A subnet.env left by a run that held
// another subnet (the host moved: "moved") is removed meanwhile, so that
// nothing gives out addresses in another host's subnet.
//
// subnet.env lives on a small tmpfs mounted in the test's temporary
// directory, unmounted at the end.
func TestSubnetEnvDiskFault(t *testing.T) {
	conf := `{"Network":"10.244.0.0/16","Backend":{"Type":"fake"}}`
	cluster.RunInHost(t, map[string]string{
		"/full/config":      conf,
		"/readonly/config":  conf,
		"/moved/config":     conf,
		"/directory/config": conf,
		"/moved/subnets/" + strings.Replace(movedFrom.String(), "/", "-", 1): `{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"fake","HostID":"0123456789abcdef0123456789abcdef"}`,
	}, diskFaultChild)
}

func diskFaultChild(t *testing.T, etcd string) {
	for _, c := range []struct {
		name  string
		cause string
		// fault breaks the filesystem mounted at dir; mend repairs it.
		fault, mend func(dir string) error
	}{
		{"full", "no space left on device", fill, func(dir string) error { return os.Remove(filepath.Join(dir, "filler")) }},
		{"readonly", "read-only file system",
			func(dir string) error { return unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "") },
			func(dir string) error { return unix.Mount("", dir, "", unix.MS_REMOUNT, "") }},
		{"moved", "no space left on device", fill, func(dir string) error { return os.Remove(filepath.Join(dir, "filler")) }},
		{"directory", "rename ",
			func(dir string) error { return os.MkdirAll(filepath.Join(dir, "subnet.env", "x"), 0o755) },
			func(dir string) error { return os.RemoveAll(filepath.Join(dir, "subnet.env")) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := hostConfig(t, etcd, "/"+c.name)
			run := filepath.Join(t.TempDir(), "run")
			if err := os.Mkdir(run, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=64k"); err != nil {
				t.Fatalf("mount a tmpfs on %s: %v", run, err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(run, unix.MNT_DETACH); err != nil {
					t.Errorf("unmount %s: %v", run, err)
				}
			})
			cfg.SubnetFile = filepath.Join(run, "subnet.env")
			if c.name == "moved" {
				if err := subnetenv.Write(cfg.SubnetFile, subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: hostOne(movedFrom), MTU: 1450}); err != nil {
					t.Fatal(err)
				}
				// Held open, so that the agent's removal of it frees no
				// space: else the next try wrote subnet.env into that
				// space, unmended, half a second after the first.
				held, err := os.Open(cfg.SubnetFile)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { held.Close() })
			}
			if err := c.fault(run); err != nil {
				t.Fatal(err)
			}

			log := testr.New(t)
			a := newFakeAgent(cfg, log)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rctx, stop := context.WithCancel(klog.NewContext(ctx, log))
			errc := make(chan error, 1)
			go func() { errc <- a.run(rctx) }()
			defer func() {
				stop()
				if err := waitRun(t, errc); err != nil {
					t.Errorf("Run after a stop = %v, want nil", err)
				}
			}()

			// Lease held and peers programmed: the one reason left
			// is subnet.env.
			want := fmt.Sprintf("not ok: subnet.env not written: replace %s: ", cfg.SubnetFile)
			readyz := func(ready bool) error {
				select {
				case err := <-errc:
					errc <- err // for the deferred stop
					t.Fatalf("Run returned %v while the filesystem was broken; want it to keep running", err)
				default:
				}
				code, body, err := httpGet("http://" + cfg.HealthzAddr + "/readyz")
				switch {
				case err != nil:
					return err
				case ready && code != 200:
					return fmt.Errorf("/readyz %d %q", code, body)
				case !ready && (code != 503 || !strings.HasPrefix(string(body), want) || !strings.Contains(string(body), c.cause) || strings.Contains(string(body), ";")):
					return fmt.Errorf("/readyz %d %q, want 503 %q…%q and no other reason", code, body, want, c.cause)
				}
				return nil
			}
			if err := cluster.Eventually(ctx, 30*time.Second, func() error { return readyz(false) }); err != nil {
				t.Fatalf("with the filesystem broken: %v", err)
			}
			entries, err := os.ReadDir(run)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), ".subnet.env.tmp") {
					t.Errorf("%s holds the temporary file %s while the write fails", run, e.Name())
				}
			}
			if _, err := os.Stat(cfg.SubnetFile); c.name == "moved" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("subnet.env naming %s, another host's subnet, while the write fails: %v, want it removed", movedFrom, err)
			}

			mended := time.Now()
			if err := c.mend(run); err != nil {
				t.Fatal(err)
			}
			if err := cluster.Eventually(ctx, 30*time.Second, func() error { return readyz(true) }); err != nil {
				t.Fatalf("after the filesystem was mended: %v", err)
			}
			t.Logf("ready %v after the filesystem was mended", time.Since(mended).Round(time.Millisecond))
			env, err := subnetenv.ReadOwnedComplete(cfg.SubnetFile)
			if err != nil {
				t.Fatal(err)
			}
			a.obs.mu.Lock()
			own := a.obs.st.Subnet
			a.obs.mu.Unlock()
			// Only the moved case's previous subnet is another host's;
			// the others may lease 10.244.99.0/24 by chance.
			if env.LeaseSubnet().String() != own || c.name == "moved" && own == movedFrom.String() {
				t.Errorf("subnet.env names %s, the lease is %s (and must not be %s)", env.LeaseSubnet(), own, movedFrom)
			}
		})
	}
}

// fill fills the filesystem mounted at dir with the file "filler".
func fill(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "filler"), make([]byte, 1<<20), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("filling %s: %v, want ENOSPC", dir, err)
	}
	return nil
}
