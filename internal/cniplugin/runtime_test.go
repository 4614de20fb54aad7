package cniplugin

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/testchild"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// pluginName is the name under which the test binary, run through a
// symbolic link, is agentd-cni itself (see TestMain): the same command table
// and versions as run/agentd-cni, behind skel, as a runtime executes it.
const pluginName = "agentd-cni"

// testNetnsEnv passes the network namespace the tests run in (the machine's)
// to the plugin runs they start, which must run in another (see TestMain).
const testNetnsEnv = "CNIPLUGIN_TEST_NETNS"

func TestMain(m *testing.M) {
	ns, err := os.Readlink("/proc/self/ns/net")
	if filepath.Base(os.Args[0]) == pluginName {
		// DEL and GC look for, and remove, bridge's masquerade chains
		// in the nat table where they run: a test runs the plugin only
		// in a network namespace it made (see runtime).
		if err == nil && ns == os.Getenv(testNetnsEnv) {
			types.NewError(types.ErrInternal, "agentd-cni (test binary) runs in the tests' own network namespace "+ns, "").Print()
			os.Exit(1)
		}
		skel.PluginMainFuncs((&Plugin{}).Funcs(), Versions, "agentd-cni (test binary)")
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv(testNetnsEnv, ns)
	// The plugin runs (this binary, through libcni, which hands them this
	// environment) exit without the race detector's second
	// (testchild.ExitAtOnce): a test waits for each, and a second for
	// every ADD, CHECK, DEL and GC made up most of the package's time.
	if _, err := testchild.ExitAtOnce(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// unmet fails the test with why, a requirement it lacks, where CI is set,
// and skips it elsewhere; why "" is none.
func unmet(t *testing.T, why string) {
	t.Helper()
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s; CI is set, so this is a failure, not a skip", why)
	}
	t.Skip(why)
}

// debianCNI is where Debian's containernetworking-plugins (1.1.1, CNI
// versions up to 1.0.0) puts host-local.
const debianCNI = "/usr/lib/cni"

// runtime drives agentd-cni through libcni as containerd and CRI-O do (libcni
// 1.3: it picks the highest of a network's "cniVersions" it knows, caches
// results, synthesizes DEL for GC), with Debian's real host-local as the
// delegate. subnetFile, dataDir (agentd-cni's) and ipamDir (host-local's) are
// the test's, and so is host, the network namespace standing for the host,
// in which the runtime runs the plugins (see inNetns): host-local touches
// only its files, but agentd-cni's DEL and GC look for, and remove, bridge's
// masquerade chains in the nat table where they run (see masqChains), which
// a test must not do in the machine's.
type runtime struct {
	cni                          *libcni.CNIConfig
	host                         string
	subnetFile, dataDir, ipamDir string
	cacheDir                     string
}

// newRuntime fails the test where CI is set, and skips it elsewhere,
// without root, ip(8) or Debian's host-local.
func newRuntime(t *testing.T) *runtime {
	t.Helper()
	hostLocal := filepath.Join(debianCNI, "host-local")
	var why string
	if os.Geteuid() != 0 {
		why = fmt.Sprintf("needs root to create a network namespace (euid %d)", os.Geteuid())
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs ip (apt-get install iproute2)"
	} else if _, err := os.Stat(hostLocal); err != nil {
		why = hostLocal + " is missing: apt-get install containernetworking-plugins"
	}
	unmet(t, why)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(self, filepath.Join(bin, pluginName)); err != nil {
		t.Fatal(err)
	}
	r := &runtime{
		host:       netns(t, "h"),
		subnetFile: filepath.Join(dir, "subnet.env"),
		dataDir:    filepath.Join(dir, "data"),
		ipamDir:    filepath.Join(dir, "ipam"),
		cacheDir:   filepath.Join(dir, "cache"),
	}
	r.cni = libcni.NewCNIConfigWithCacheDir([]string{bin, debianCNI}, r.cacheDir, inNetns(r.host))
	if err := os.WriteFile(r.subnetFile, []byte(envA), 0o644); err != nil {
		t.Fatal(err)
	}
	return r
}

// list is the network cbr0 with version keys versions (`"cniVersion":…`),
// agentd-cni delegating to host-local.
func (r *runtime) list(t *testing.T, versions string) *libcni.NetworkConfigList {
	t.Helper()
	b := `{"name":"cbr0",` + versions + `,"plugins":[{"type":"agentd-cni","subnetFile":"` + r.subnetFile + `","dataDir":"` + r.dataDir + `","subnetFileWait":"0s","delegate":{"type":"host-local"},"ipam":{"dataDir":"` + r.ipamDir + `"}}]}`
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (r *runtime) pod(id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: "/var/run/netns/" + id, IfName: "eth0",
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", id}}}
}

// allocated lists the addresses host-local holds in cbr0.
func (r *runtime) allocated(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(r.ipamDir, "cbr0"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range ents {
		if _, err := netip.ParseAddr(e.Name()); err == nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// TestNetworkVersion110: a network in CNI 1.1.0, written so or picked by a
// runtime with libcni 1.2 or later (containerd 2, CRI-O 1.30) from
// "cniVersions", as the CNI project advises for moving to 1.1.0, works as in
// 1.0.0: ADD gives a 1.1.0 result, CHECK and DEL pass, with delegates that
// stop at 1.0.0 (Debian's plugins). A pod added while the runtime ran the
// network in 1.0.0 is deleted in 1.1.0 after the runtime's upgrade.
func TestNetworkVersion110(t *testing.T) {
	for _, versions := range []string{`"cniVersion":"1.1.0"`, `"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0"]`} {
		t.Run(versions, func(t *testing.T) {
			r := newRuntime(t)
			l := r.list(t, versions)
			if l.CNIVersion != "1.1.0" {
				t.Fatalf("libcni runs the network in %s, want 1.1.0", l.CNIVersion)
			}
			ctx := context.Background()
			res, err := r.cni.AddNetworkList(ctx, l, r.pod("c1"))
			if err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if res.Version() != "1.1.0" {
				t.Errorf("ADD result in %s, want 1.1.0", res.Version())
			}
			if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.2"}) {
				t.Errorf("host-local holds %q, want 10.244.5.2", got)
			}
			if err := r.cni.CheckNetworkList(ctx, l, r.pod("c1")); err != nil {
				t.Errorf("CHECK: %v", err)
			}
			if err := r.cni.DelNetworkList(ctx, l, r.pod("c1")); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if got := r.allocated(t); len(got) != 0 {
				t.Errorf("after DEL host-local holds %q", got)
			}
			if ents, _ := os.ReadDir(r.dataDir); len(ents) != 0 {
				t.Errorf("after DEL dataDir holds %v", ents)
			}

			// A pod added while the runtime ran the network in 1.0.0
			// (libcni before 1.2 skips the "cniVersions" it does not
			// know), deleted after the runtime's upgrade.
			old := r.list(t, `"cniVersion":"1.0.0"`)
			if _, err := r.cni.AddNetworkList(ctx, old, r.pod("c2")); err != nil {
				t.Fatalf("ADD in 1.0.0: %v", err)
			}
			if err := r.cni.DelNetworkList(ctx, l, r.pod("c2")); err != nil {
				t.Fatalf("DEL in 1.1.0 of a pod added in 1.0.0: %v", err)
			}
			if got := r.allocated(t); len(got) != 0 {
				t.Errorf("after DEL host-local holds %q", got)
			}
		})
	}
}

// TestStatus: in a 1.1.0 network the runtime asks STATUS whether ADD can be
// served (containerd 2 reports the node's network not ready while it fails,
// so the kubelet starts no pod there): it cannot while subnet.env is
// missing, unreadable or incomplete (agentd has not leased yet, after a
// boot), code 50 naming the file; it can once the file is there. Debian's
// host-local stops at 1.0.0 and knows no STATUS, so it is not asked.
func TestStatus(t *testing.T) {
	r := newRuntime(t)
	l := r.list(t, `"cniVersion":"1.1.0"`)
	ctx := context.Background()
	if err := r.cni.GetStatusNetworkList(ctx, l); err != nil {
		t.Fatalf("STATUS with subnet.env: %v", err)
	}
	for _, tc := range []struct{ name, content, want string }{
		{"missing", "", r.subnetFile + " does not exist: agentd writes it once it holds this host's subnet"},
		{"cut short", envA[:len(envA)-1], "subnet.env " + r.subnetFile + ": line 4"},
		{"a directory", "dir", "cannot read subnet.env: read " + r.subnetFile},
	} {
		os.Remove(r.subnetFile)
		switch tc.content {
		case "":
		case "dir":
			if err := os.Mkdir(r.subnetFile, 0o755); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(r.subnetFile, []byte(tc.content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		err := r.cni.GetStatusNetworkList(ctx, l)
		var te *types.Error
		if !errors.As(err, &te) || te.Code != types.ErrPluginNotAvailable || !strings.Contains(te.Msg, tc.want) {
			t.Errorf("STATUS with subnet.env %s: %v, want code %d and %q", tc.name, err, types.ErrPluginNotAvailable, tc.want)
		}
		os.Remove(r.subnetFile)
	}
}

// TestGC: in a 1.1.0 network the runtime's GC names the attachments still
// valid. Pods whose DEL never came and whose runtime forgot them too (its
// result cache lost with a reinstall or a wiped /var/lib/cni/results, so
// libcni synthesizes no DEL) keep their addresses and saved files for good
// unless GC releases them: it runs the delegate's DEL with each stale
// attachment's saved configuration (no network namespace: GC may take it as
// gone) and forgets it, and leaves valid ones, and legacy files of
// flannel's plugin (no interface recorded), alone.
func TestGC(t *testing.T) {
	r := newRuntime(t)
	l := r.list(t, `"cniVersion":"1.1.0"`)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2", "c3"} {
		if _, err := r.cni.AddNetworkList(ctx, l, r.pod(id)); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	flannels := filepath.Join(r.dataDir, "f1")
	if err := os.WriteFile(flannels, []byte(`{"cniVersion":"0.3.1","ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]],"type":"host-local"},"name":"cbr0","type":"host-local"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(r.cacheDir); err != nil {
		t.Fatal(err)
	}
	valid := []types.GCAttachment{{ContainerID: "c2", IfName: "eth0"}}
	if err := r.cni.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.3"}) {
		t.Errorf("after GC host-local holds %q, want only c2's 10.244.5.3", got)
	}
	names := fileNames(t, r.dataDir)
	if want := []string{"c2", "cbr0:c2:eth0", "f1"}; !slices.Equal(names, want) {
		t.Errorf("after GC dataDir holds %q, want %q", names, want)
	}
	// Run again (runtimes run GC periodically): nothing left to do.
	if err := r.cni.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC again: %v", err)
	}
	if err := r.cni.DelNetworkList(ctx, l, r.pod("c2")); err != nil {
		t.Fatal(err)
	}
	if got := r.allocated(t); len(got) != 0 {
		t.Errorf("after DEL c2 host-local holds %q", got)
	}
}

// TestDelReleasesWithNothingSaved: DEL of a pod whose saved configuration is
// gone (a wiped dataDir) or damaged, while subnet.env is gone too (agentd
// stopped, lost its subnet, or has not leased since a reboot), still frees
// the pod's address in host-local's store and succeeds. host-local releases
// by container ID and interface, whatever range its configuration names.
// Before, DEL succeeded without running the delegate, and the address stayed
// taken for good.
func TestDelReleasesWithNothingSaved(t *testing.T) {
	for _, tc := range []struct{ name, saved string }{{"no saved configuration", ""}, {"damaged saved configuration", `{"cniVersion":"1.0.0","type":"bri`}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t)
			l := r.list(t, `"cniVersion":"1.0.0"`)
			ctx := context.Background()
			for _, id := range []string{"c1", "c2"} {
				if _, err := r.cni.AddNetworkList(ctx, l, r.pod(id)); err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
			}
			for _, name := range []string{"c1", "cbr0:c1:eth0"} {
				if err := os.Remove(filepath.Join(r.dataDir, name)); err != nil {
					t.Fatal(err)
				}
			}
			if tc.saved != "" {
				if err := os.WriteFile(filepath.Join(r.dataDir, "cbr0:c1:eth0"), []byte(tc.saved), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.Remove(r.subnetFile); err != nil {
				t.Fatal(err)
			}
			if err := r.cni.DelNetworkList(ctx, l, r.pod("c1")); err != nil {
				t.Fatalf("DEL c1: %v", err)
			}
			if got := r.allocated(t); !slices.Equal(got, []string{"10.244.5.3"}) {
				t.Errorf("after DEL c1 host-local holds %q, want only c2's 10.244.5.3", got)
			}
			if names := fileNames(t, r.dataDir); !slices.Equal(names, []string{"c2", "cbr0:c2:eth0"}) {
				t.Errorf("after DEL c1 dataDir holds %q", names)
			}
			// c2's own DEL uses its saved configuration, as before.
			if err := r.cni.DelNetworkList(ctx, l, r.pod("c2")); err != nil {
				t.Fatalf("DEL c2: %v", err)
			}
			if got := r.allocated(t); len(got) != 0 {
				t.Errorf("after DEL c2 host-local holds %q", got)
			}
		})
	}
}
