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

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
	"github.com/go-logr/logr/funcr"
	"k8s.io/klog/v2"
)

// otherUID is the owner the tests give files that another, unprivileged
// user would have made (nobody).
const otherUID = 65534

// requireChown fails the test where CI is set, and skips it elsewhere, when
// the process cannot give a file to another user.
func requireChown(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	const msg = "needs root to give a file to another user (run the tests as root)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg + "; CI is set, so this is a failure")
	}
	t.Skip(msg)
}

// TestStateDirNotForged: a state dir that another user can write to is
// refused before anything in it is read or written, and so is a lock file
// that is a symbolic or hard link. Before 2026-12-06 the agent opened
// agentd.lock through whatever link was there and truncated it: a local
// user's symbolic link in a writable state dir had root overwrite any file
// (seen with /tmp/victim, 0600 root's: its content became the agent's pid),
// and a forged host-id there made the agent take another host's lease.
func TestStateDirNotForged(t *testing.T) {
	const secret = "root's secret\n"
	victim := filepath.Join(t.TempDir(), "victim")
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, dir string)
		want    string
		root    bool
	}{
		{"lock file a symbolic link", func(t *testing.T, dir string) {
			if err := os.Symlink(victim, filepath.Join(dir, lockFile)); err != nil {
				t.Fatal(err)
			}
		}, "agentd.lock is a symbolic link, which agentd does not follow: remove it", false},
		{"lock file a hard link", func(t *testing.T, dir string) {
			if err := os.Link(victim, filepath.Join(dir, lockFile)); err != nil {
				t.Fatal(err)
			}
		}, "agentd.lock has 2 hard links", false},
		{"dir writable by others", func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o777); err != nil {
				t.Fatal(err)
			}
		}, "is writable by its group or others (mode 0777)", false},
		{"dir writable by its group", func(t *testing.T, dir string) {
			if err := os.Chmod(dir, 0o775); err != nil {
				t.Fatal(err)
			}
		}, "is writable by its group or others (mode 0775)", false},
		{"dir another user's", func(t *testing.T, dir string) {
			if err := os.Chown(dir, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}, "is owned by uid 65534", true},
		{"lock file another user's", func(t *testing.T, dir string) {
			p := filepath.Join(dir, lockFile)
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, otherUID, otherUID); err != nil {
				t.Fatal(err)
			}
		}, "agentd.lock is owned by uid 65534", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root {
				requireChown(t)
			}
			if err := os.WriteFile(victim, []byte(secret), 0o600); err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			tc.prepare(t, dir)
			f, err := lockStateDir(dir)
			if err == nil {
				f.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("lockStateDir: %v, want an error saying %q", err, tc.want)
			} else {
				t.Logf("lockStateDir: %v", err)
			}
			if b, err := os.ReadFile(victim); err != nil || string(b) != secret {
				t.Errorf("the file the link led to holds %q, %v; want it unchanged, %q", b, err, secret)
			}
		})
	}

	// The agent refuses to start on such a dir, and says why and what to do.
	cfg := stateLockConfig(t)
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cfg.StateDir, 0o777); err != nil {
		t.Fatal(err)
	}
	var logs logLines
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})))
	defer cancel()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		err = Run(ctx, cfg)
	}()
	// Either the agent returns, or it goes on past the state dir (it logs
	// its interface once it has locked it) and is stopped.
	if werr := cluster.Eventually(ctx, 10*time.Second, func() error {
		select {
		case <-done:
			return nil
		default:
		}
		for _, l := range logs.get() {
			if strings.Contains(l, `"msg"="using interface"`) {
				return nil
			}
		}
		return errors.New("the agent neither returned nor logged its interface")
	}); werr != nil {
		t.Fatal(werr)
	}
	cancel()
	<-done
	want := "state dir: " + cfg.StateDir + " is writable by its group or others (mode 0777)"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "chmod go-w "+cfg.StateDir) {
		t.Errorf("agent on a state dir anyone can write: %v, want an error saying %q and how to mend it", err, want)
	}
	if _, err := os.Lstat(filepath.Join(cfg.StateDir, lockFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused state dir got %s: %v", lockFile, err)
	}
}

// TestPreviousSubnetForged: a subnet.env (or lost-subnet.env) that someone
// other than root may have written names no previous subnet. Before
// 2026-12-06 the agent took it at its word: a local user who could write the
// directory of subnet.env (a /run/flannel made 0777, a --subnet-file in
// /tmp) put there a file naming another host's subnet and that host's
// AGENTD_HOST_ID (any user can read both in that host's subnet.env), and the
// agent's next start without a lease of its own took that host's live lease
// as its own from before a lost state dir (subnet.Manager's PreviousHostID)
// where both hosts have one public address (behind one NAT), and moved to
// another subnet, saying MOVING TO ANOTHER SUBNET, where they do not
// (TestForgedSubnetEnvTakesNoLease in tests/integration shows the first).
func TestPreviousSubnetForged(t *testing.T) {
	const forged = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\nAGENTD_HOST_ID=0123456789abcdef0123456789abcdef\n"
	netCfg := &subnet.Config{Network: netip.MustParsePrefix("10.244.0.0/16")}
	for _, tc := range []struct {
		name string
		lost bool // lost-subnet.env in the state dir, no subnet.env
		mode os.FileMode
		uid  int
		want string
	}{
		{"own", false, 0o644, -1, ""},
		{"writable by others", false, 0o666, -1, "is writable by its group or others (mode 0666)"},
		{"another user's", false, 0o644, otherUID, "is owned by uid 65534"},
		{"lost-subnet.env writable by others", true, 0o666, -1, "is writable by its group or others (mode 0666)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.uid >= 0 {
				requireChown(t)
			}
			cfg := stateLockConfig(t)
			path := cfg.SubnetFile
			if tc.lost {
				path = lostSubnetPath(cfg.StateDir)
				if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.WriteFile(path, []byte(forged), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			if tc.uid >= 0 {
				if err := os.Chown(path, tc.uid, tc.uid); err != nil {
					t.Fatal(err)
				}
			}
			var logs logLines
			sn, hostID := previousSubnet(funcr.New(logs.add, funcr.Options{}), &cfg, netCfg)
			if tc.want == "" {
				if sn != netip.MustParsePrefix("10.244.7.0/24") || hostID != "0123456789abcdef0123456789abcdef" {
					t.Fatalf("previous subnet of root's own file: %v, %q", sn, hostID)
				}
				return
			}
			if sn.IsValid() || hostID != "" {
				t.Errorf("previous subnet of %s: %v, host %q; want none", tc.name, sn, hostID)
			}
			got := strings.Join(logs.get(), "\n")
			if !strings.Contains(got, "ignoring previous subnet.env") || !strings.Contains(got, tc.want) {
				t.Errorf("log %q, want 'ignoring previous subnet.env' and %q", got, tc.want)
			}
		})
	}
}
