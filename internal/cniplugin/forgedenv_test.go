package cniplugin

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
)

// TestAddRefusesForgedSubnetEnv: ADD takes no subnet.env that someone other
// than root may have written, and fails at once, without a delegate, naming
// the file and what is wrong with it. Before 2026-12-06 the plugin (run as
// root by the runtime) read whatever was at the path: a local user who could
// write its directory (a /run/flannel made 0777, a subnetFile in /tmp)
// chose every new pod's subnet, gateway, MTU and masquerading with a file of
// their own, and a named pipe there hung every ADD.
func TestAddRefusesForgedSubnetEnv(t *testing.T) {
	const forged = "FLANNEL_NETWORK=198.18.0.0/15\nFLANNEL_SUBNET=198.18.0.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		want    string
		root    bool
	}{
		{"writable by others", func(t *testing.T, path string) {
			writeMode(t, path, forged, 0o666)
		}, "subnet.env is writable by its group or others (mode 0666)", false},
		{"writable by its group", func(t *testing.T, path string) {
			writeMode(t, path, forged, 0o664)
		}, "subnet.env is writable by its group or others (mode 0664)", false},
		{"a hard link", func(t *testing.T, path string) {
			writeMode(t, path+".orig", forged, 0o644)
			if err := os.Link(path+".orig", path); err != nil {
				t.Fatal(err)
			}
		}, "subnet.env has 2 hard links", false},
		{"a named pipe", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o644); err != nil {
				t.Fatal(err)
			}
		}, "subnet.env is not a regular file", false},
		{"another user's", func(t *testing.T, path string) {
			writeMode(t, path, forged, 0o644)
			if err := os.Chown(path, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "subnet.env is owned by uid 65534", true},
		{"a symbolic link to another user's", func(t *testing.T, path string) {
			writeMode(t, path+".theirs", forged, 0o644)
			if err := os.Chown(path+".theirs", 65534, 65534); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(path+".theirs", path); err != nil {
				t.Fatal(err)
			}
		}, "subnet.env is owned by uid 65534", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.root && os.Geteuid() != 0 {
				const msg = "needs root to give a file to another user (run the tests as root)"
				if os.Getenv("CI") != "" {
					t.Fatal(msg + "; CI is set, so this is a failure")
				}
				t.Skip(msg)
			}
			f := newFixture(t)
			tc.prepare(t, f.subnetFile)
			done := make(chan error, 1)
			go func() { done <- f.p.Add(f.args("c1", "")) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				// Opening a named pipe for reading waits for a writer.
				t.Fatal("ADD still running after 10 s")
			}
			var te *types.Error
			if !errors.As(err, &te) || te.Code != types.ErrInvalidNetworkConfig || !strings.Contains(te.Msg, tc.want) {
				t.Fatalf("ADD: %v, want code %d and %q", err, types.ErrInvalidNetworkConfig, tc.want)
			}
			t.Logf("ADD: %s", te.Msg)
			if len(f.exec.calls) > 0 {
				t.Errorf("a delegate ran: %+v", f.exec.calls)
			}
			if f.sleeps > 0 {
				t.Errorf("ADD waited %d times for a subnet.env that is there", f.sleeps)
			}
		})
	}

	// A symbolic link to root's own file is followed.
	f := newFixture(t)
	writeMode(t, f.subnetFile+".real", envA, 0o644)
	if err := os.Symlink(f.subnetFile+".real", f.subnetFile); err != nil {
		t.Fatal(err)
	}
	if err := f.p.Add(f.args("c1", "")); err != nil {
		t.Fatalf("ADD through a symbolic link to root's subnet.env: %v", err)
	}
}

// writeMode writes content to path with exactly mode, whatever the umask.
func writeMode(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}
