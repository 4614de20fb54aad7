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
	"k8s.io/klog/v2"
)

// TestSubnetFileParentRefused: an agent whose --subnet-file is in a
// directory another user owns, or one its group or others may write to and
// that is not sticky, refuses to start, naming the directory and how to
// mend it, before it touches etcd or the kernel. Before 2026-12-06 it went
// on (it logged its interface and dialled etcd): it would have held a lease
// and programmed its peers, while agentd-cni and agentd-docker-opts refuse
// a subnet.env there (subnetenv.ReadOwned, checked below), so every new pod
// failed with the CNI plugin's error, far from the cause. A sticky
// directory of root's, as /tmp is, is used. --release-lease refuses such a
// directory too, before it releases anything (before 2026-12-06 it removed
// the subnet.env it found there after the release).
func TestSubnetFileParentRefused(t *testing.T) {
	requireChown(t)
	for _, tc := range []struct {
		name    string
		prepare func(dir string) error
		want    string // "" for a directory that is used
	}{
		{"nobody's", func(d string) error { return os.Chown(d, otherUID, otherUID) }, "is owned by uid 65534"},
		{"writable by all", func(d string) error { return os.Chmod(d, 0o777) }, "is writable by its group or others (mode 0777) and not sticky"},
		{"writable by its group", func(d string) error { return os.Chmod(d, 0o775) }, "is writable by its group or others (mode 0775) and not sticky"},
		{"sticky and root's", func(d string) error { return os.Chmod(d, 0o777|os.ModeSticky) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := stateLockConfig(t)
			flannel := filepath.Join(filepath.Dir(cfg.SubnetFile), "flannel")
			cfg.SubnetFile = filepath.Join(flannel, "subnet.env")
			if err := os.Mkdir(flannel, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tc.prepare(flannel); err != nil {
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
			// Either the agent returns, or it goes on past its start
			// checks (it logs its interface) and is stopped.
			wentOn := func() bool {
				for _, l := range logs.get() {
					if strings.Contains(l, `"msg"="using interface"`) {
						return true
					}
				}
				return false
			}
			if werr := cluster.Eventually(ctx, 10*time.Second, func() error {
				select {
				case <-done:
					return nil
				default:
				}
				if wentOn() {
					return nil
				}
				return errors.New("the agent neither returned nor logged its interface")
			}); werr != nil {
				t.Fatal(werr)
			}
			cancel()
			<-done
			if tc.want == "" {
				// Another agent or a flanneld in this namespace may stop
				// it for a reason of theirs; not for subnet.env.
				if err != nil && strings.Contains(err.Error(), "subnet.env") {
					t.Errorf("agent with --subnet-file in a sticky directory of root's: %v; want it used", err)
				}
				return
			}
			want := "subnet.env (--subnet-file): " + flannel + " " + tc.want + ", so someone other than root may have replaced " + cfg.SubnetFile +
				": make " + flannel + " root's and writable by root only (chown root: " + flannel + "; chmod go-w " + flannel + "); " +
				"agentd-cni and agentd-docker-opts refuse a subnet.env there, so no container on this host would get an address"
			if err == nil || err.Error() != want {
				t.Fatalf("agent with --subnet-file in a directory that is %s (went on to its interface: %v): %v\nwant %s", tc.name, wentOn(), err, want)
			}
			t.Logf("agent: %v", err)
			if wentOn() {
				t.Errorf("the agent logged its interface before it refused subnet.env's directory")
			}
			// --release-lease refuses it too, before it releases
			// anything or removes the file there.
			rel := cfg
			rel.ReleaseLease = true
			if err := os.WriteFile(cfg.SubnetFile, []byte("kept"), 0o644); err != nil {
				t.Fatal(err)
			}
			wantRel := "subnet.env (--subnet-file): " + flannel + " " + tc.want
			if err := Run(klog.NewContext(context.Background(), funcr.New(logs.add, funcr.Options{})), rel); err == nil ||
				!strings.HasPrefix(err.Error(), wantRel) || !strings.HasSuffix(err.Error(), "; nothing released, as agentd would remove subnet.env there") {
				t.Errorf("--release-lease with --subnet-file in a directory that is %s: %v\nwant %s…; nothing released, as agentd would remove subnet.env there", tc.name, err, wantRel)
			}
			if b, err := os.ReadFile(cfg.SubnetFile); err != nil || string(b) != "kept" {
				t.Errorf("subnet.env after the refused release: %q, %v; want it left", b, err)
			}
			// The refusal is the readers': a subnet.env written there is
			// refused by them for the same reason.
			env := subnetenv.Env{Network: netip.MustParsePrefix("10.244.0.0/16"), Subnet: netip.MustParsePrefix("10.244.5.1/24"), MTU: 1450}
			if err := subnetenv.Write(cfg.SubnetFile, env); err != nil {
				t.Fatal(err)
			}
			if _, err := subnetenv.ReadOwned(cfg.SubnetFile); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("subnetenv.ReadOwned of a subnet.env there: %v; want it refused, saying %q", err, tc.want)
			}
		})
	}
}
