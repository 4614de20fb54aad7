package cniplugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

// nsPrefix starts the names of this package's network namespaces:
// <nsPrefix><pid>-<short>, so that a later run deletes those of a run that
// was killed.
const nsPrefix = "acni"

var sweeper = nsreap.Sweeper{Prefix: nsPrefix}

// needRoot fails the test where CI is set, and skips it elsewhere, without
// root, ip(8), iptables-save or Debian's bridge and host-local.
func needRoot(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = fmt.Sprintf("needs root to create network namespaces (euid %d)", os.Geteuid())
	}
	for _, cmd := range []string{"ip", "iptables-save"} {
		if _, err := exec.LookPath(cmd); err != nil && why == "" {
			why = "needs " + cmd + " (apt-get install iproute2 iptables)"
		}
	}
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join(debianCNI, p)); err != nil && why == "" {
			why = "needs " + filepath.Join(debianCNI, p) + " (apt-get install containernetworking-plugins)"
		}
	}
	unmet(t, why)
}

// netns makes an empty network namespace for the test and returns its
// name; it is deleted when the test ends.
func netns(t *testing.T, short string) string {
	t.Helper()
	sweeper.Sweep(t)
	if err := nsreap.PrepareDir(); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("%s%d-%s", nsPrefix, os.Getpid(), short)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if err := nsreap.Delete(filepath.Join(nsreap.Dir, name)); err != nil {
			t.Errorf("delete namespace %s: %v", name, err)
		}
	})
	return name
}

// inNetns runs plugins in a network namespace, as a runtime on the host
// that namespace stands for would: bridge makes cni0, the veth and its
// iptables rules where it runs, and so do the delegates agentd-cni starts.
type inNetns string

var _ invoke.Exec = inNetns("")

func (ns inNetns) ExecPlugin(ctx context.Context, path string, stdin []byte, environ []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", string(ns), path)
	cmd.Env, cmd.Stdin, cmd.Stdout, cmd.Stderr = environ, bytes.NewReader(stdin), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		var te types.Error
		if json.Unmarshal(stdout.Bytes(), &te) == nil && te.Msg != "" {
			return nil, &te
		}
		return nil, fmt.Errorf("%s: %w: %s%s", filepath.Base(path), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes(), nil
}

func (inNetns) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (inNetns) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// cniRules are the nat table's lines in namespace ns that name a CNI
// chain: bridge's masquerade chain of a pod and the POSTROUTING rule
// jumping to it.
func cniRules(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "iptables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("iptables-save in %s: %v: %s", ns, err, out)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "CNI-") {
			rules = append(rules, line)
		}
	}
	return rules
}

// envBridgeMasq is envA with FLANNEL_IPMASQ=false: ADD gives bridge
// ipMasq, and bridge masquerades the pod's traffic in a chain of its own.
var envBridgeMasq = strings.Replace(envA, "FLANNEL_IPMASQ=true", "FLANNEL_IPMASQ=false", 1)

// bridgeList writes env as r's subnet.env and returns the network cbr0 at
// cniVersion: agentd-cni delegating to bridge (the default), host-local
// its IPAM.
func (r *runtime) bridgeList(t *testing.T, cniVersion, env string) *libcni.NetworkConfigList {
	t.Helper()
	if err := os.WriteFile(r.subnetFile, []byte(env), 0o644); err != nil {
		t.Fatal(err)
	}
	b := `{"name":"cbr0","cniVersion":"` + cniVersion + `","plugins":[{"type":"agentd-cni","subnetFile":"` + r.subnetFile + `","dataDir":"` + r.dataDir + `","subnetFileWait":"0s","ipam":{"dataDir":"` + r.ipamDir + `"}}]}`
	l, err := libcni.ConfListFromBytes([]byte(b))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// delReleases runs the DEL of rt on l and fails t unless it left no CNI
// chain or rule in host's nat table and no address held by host-local.
func (r *runtime) delReleases(t *testing.T, host string, l *libcni.NetworkConfigList, rt *libcni.RuntimeConf) {
	t.Helper()
	if err := r.cni.DelNetworkList(context.Background(), l, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := cniRules(t, host); len(got) > 0 {
		t.Errorf("after DEL the host's nat table still has\n%s", strings.Join(got, "\n"))
	}
	if got := r.allocated(t); len(got) > 0 {
		t.Errorf("after DEL host-local holds %q", got)
	}
}

// TestDelRemovesBridgeMasquerade: with FLANNEL_IPMASQ=false bridge
// masquerades the pod's traffic, through a chain of its own per pod that
// its DEL removes only when told ipMasq. A DEL without the saved
// configuration (a wiped dataDir, a damaged file) told it ipMasq false when
// subnet.env was unreadable too (the placeholder range) or said
// FLANNEL_IPMASQ=true by then: bridge deleted the interface and freed the
// address but left the chain and its POSTROUTING rule for good (a second
// DEL finds no interface, so no address to remove them by), and a later pod
// given that address was masqueraded by it, pod-to-pod traffic to other
// hosts included. Real bridge and host-local in a namespace standing for
// the host, the pod in another.
func TestDelRemovesBridgeMasquerade(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name      string
		saved     string // what is left of the saved configuration
		envThen   string // subnet.env at DEL; "" for none
		masqAtAdd bool   // FLANNEL_IPMASQ=false at ADD: bridge masquerades
	}{
		{"nothing saved, no subnet.env", "", "", true},
		{"damaged saved, no subnet.env", `{"cniVersion":"1.0.0","type":"bri`, "", true},
		{"nothing saved, agentd masquerades now", "", envA, true},
		// ADD without bridge masquerading: DEL with ipMasq must not fail
		// on the chain that is not there.
		{"bridge never masqueraded", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t)
			host, pod := r.host, netns(t, "p")
			env := envA
			if tc.masqAtAdd {
				env = envBridgeMasq
			}
			l := r.bridgeList(t, "1.0.0", env)
			rt := r.pod("c1")
			rt.NetNS = filepath.Join(nsreap.Dir, pod)
			ctx := context.Background()
			if _, err := r.cni.AddNetworkList(ctx, l, rt); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			got := cniRules(t, host)
			if tc.masqAtAdd != (len(got) > 0) {
				t.Fatalf("after ADD the host's nat table has %q", got)
			}
			if chain := masqChainName("cbr0", "c1"); tc.masqAtAdd && !strings.Contains(strings.Join(got, "\n"), ":"+chain+" ") {
				t.Errorf("bridge's chain is not %s: %q", chain, got)
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
			os.Remove(r.subnetFile)
			if tc.envThen != "" {
				if err := os.WriteFile(r.subnetFile, []byte(tc.envThen), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r.delReleases(t, host, l, rt)
		})
	}
}

// TestDelRebuiltIPMasq: a DEL whose configuration is rebuilt (nothing
// saved) gives the delegate ipMasq exactly when the attachment's
// masquerade chain is there, whatever FLANNEL_IPMASQ says now and also
// without subnet.env; another container's chain does not count. Where the
// look-up fails, the delegate gets ipMasq false and the chain is removed
// after its DEL, also with the pod's namespace there.
func TestDelRebuiltIPMasq(t *testing.T) {
	live := filepath.Join(t.TempDir(), "netns")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, env string
		chains    map[string]bool
		hasErr    error
		want      bool
		removed   []string
	}{
		{"chain, agentd masquerades now", envA, map[string]bool{"cbr0 c1": true}, nil, true, nil},
		{"chain, no subnet.env", "", map[string]bool{"cbr0 c1": true}, nil, true, nil},
		{"another container's chain", envBridgeMasq, map[string]bool{"cbr0 c2": true, "other c1": true}, nil, false, nil},
		{"no chain, no subnet.env", "", nil, nil, false, nil},
		{"look-up fails", envBridgeMasq, map[string]bool{"cbr0 c1": true}, errors.New("xtables lock"), false, []string{"cbr0 c1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.env != "" {
				f.writeEnv(t, tc.env)
			}
			f.masq.chains, f.masq.hasErr = tc.chains, tc.hasErr
			a := f.args("c1", "")
			a.Netns = live
			if err := f.p.Del(a); err != nil {
				t.Fatal(err)
			}
			if len(f.exec.calls) != 1 || f.exec.calls[0].conf["ipMasq"] != tc.want {
				t.Errorf("DEL ran %+v, want one with ipMasq %v", f.exec.calls, tc.want)
			}
			if !slices.Equal(f.masq.removed, tc.removed) {
				t.Errorf("DEL removed the chains of %q, want %q", f.masq.removed, tc.removed)
			}
		})
	}
}

// TestGCRemovesBridgeMasquerade: GC's DEL of a stale attachment has no
// network namespace, and bridge, without one, only releases the address:
// the masquerade chain it made for the pod (FLANNEL_IPMASQ=false) and the
// POSTROUTING rule for the pod's address stayed for good, to masquerade
// the next pod given that address. GC removes them itself, and leaves a
// valid attachment's alone. Real bridge and host-local in a namespace
// standing for the host; the runtime's result cache is gone, so libcni
// sends no DEL of its own.
func TestGCRemovesBridgeMasquerade(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	host := r.host
	l := r.bridgeList(t, "1.1.0", envBridgeMasq)
	ctx := context.Background()
	for _, id := range []string{"c1", "c2"} {
		rt := r.pod(id)
		rt.NetNS = filepath.Join(nsreap.Dir, netns(t, id))
		if _, err := r.cni.AddNetworkList(ctx, l, rt); err != nil {
			t.Fatalf("ADD %s: %v", id, err)
		}
	}
	if err := os.RemoveAll(r.cacheDir); err != nil {
		t.Fatal(err)
	}
	valid := []types.GCAttachment{{ContainerID: "c2", IfName: "eth0"}}
	if err := r.cni.GCNetworkList(ctx, l, &libcni.GCArgs{ValidAttachments: valid}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if got := r.allocated(t); len(got) != 1 || got[0] != "10.244.5.3" {
		t.Errorf("after GC host-local holds %q, want only c2's 10.244.5.3", got)
	}
	checkGCMasq(t, host)
}

// TestDelWithoutNetnsRemovesBridgeMasquerade: a DEL whose pod network
// namespace is gone (containerd then passes none: its sandbox's namespace
// was closed already) reaches bridge, which without the namespace only
// releases the address: the masquerade chain its ADD made
// (FLANNEL_IPMASQ=false) and the POSTROUTING rule for the pod's address
// stayed for good. agentd-cni removes them after the delegate's DEL.
func TestDelWithoutNetnsRemovesBridgeMasquerade(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct{ name, netnsAtDel string }{
		{"no namespace given", ""},
		{"namespace gone", "gone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t)
			host, pod := r.host, netns(t, "p")
			l := r.bridgeList(t, "1.0.0", envBridgeMasq)
			rt := r.pod("c1")
			rt.NetNS = filepath.Join(nsreap.Dir, pod)
			ctx := context.Background()
			if _, err := r.cni.AddNetworkList(ctx, l, rt); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			if got := cniRules(t, host); len(got) != 4 {
				t.Fatalf("after ADD the host's nat table has %q, want bridge's chain, its two rules and the POSTROUTING rule", got)
			}
			if err := nsreap.Delete(rt.NetNS); err != nil {
				t.Fatal(err)
			}
			if tc.netnsAtDel == "" {
				rt.NetNS = ""
			}
			r.delReleases(t, host, l, rt)
		})
	}
}

// TestDelDropsMasqChain: DEL removes the container's masquerade chain
// itself only when the delegate ran without the pod's network namespace
// (none given, or gone), and only once no other attachment of the
// container in the network is saved (the chain is the container's); a
// failed removal is logged, and DEL succeeds.
func TestDelDropsMasqChain(t *testing.T) {
	f := newFixture(t)
	f.writeEnv(t, envA)
	live := filepath.Join(f.dir, "netns")
	if err := os.WriteFile(live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	del := func(id, ifName, netns string) {
		t.Helper()
		a := f.attach("cbr0", id, ifName, "")
		a.Netns = netns
		if err := f.p.Del(a); err != nil {
			t.Fatalf("DEL %s %s: %v", id, ifName, err)
		}
	}
	for _, a := range [][2]string{{"c1", "eth0"}, {"c2", "eth0"}, {"c2", "eth1"}, {"c3", "eth0"}, {"c4", "eth0"}} {
		if err := f.p.Add(f.attach("cbr0", a[0], a[1], "")); err != nil {
			t.Fatal(err)
		}
	}
	del("c1", "eth0", live)
	del("c2", "eth0", "")
	if len(f.masq.removed) != 0 {
		t.Errorf("DEL with the pod's namespace there, or another interface left, removed the chains of %q", f.masq.removed)
	}
	del("c2", "eth1", filepath.Join(f.dir, "gone"))
	del("c3", "eth0", "")
	if want := []string{"cbr0 c2", "cbr0 c3"}; !slices.Equal(f.masq.removed, want) {
		t.Errorf("DEL removed the chains of %q, want %q", f.masq.removed, want)
	}
	f.masq.err = errors.New("delete masquerade chain CNI-x: in use")
	del("c4", "eth0", "")
	if got := f.errOut.String(); !strings.Contains(got, "DEL of container c4 interface eth0 in network cbr0: delete masquerade chain CNI-x: in use") {
		t.Errorf("stderr %q", got)
	}
}

// checkGCMasq checks the host's nat table (cniRules) after a GC that
// released c1 of network cbr0 and kept c2, still running: none of c1's
// chain and rules left, c2's chain, its two rules and its POSTROUTING rule
// kept.
func checkGCMasq(t *testing.T, host string) {
	t.Helper()
	c1, c2 := masqChainName("cbr0", "c1"), masqChainName("cbr0", "c2")
	var left, kept []string
	for _, rule := range cniRules(t, host) {
		switch {
		case strings.Contains(rule, c1):
			left = append(left, rule)
		case strings.Contains(rule, c2):
			kept = append(kept, rule)
		}
	}
	if len(left) > 0 {
		t.Errorf("after GC the host's nat table still has c1's\n%s", strings.Join(left, "\n"))
	}
	if len(kept) != 4 {
		t.Errorf("after GC the host's nat table has of c2's, still running,\n%s\nwant its chain, its two rules and the POSTROUTING rule", strings.Join(kept, "\n"))
	}
}
