package cniplugin

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
)

// dockerfile is the image's build file, whose CNI_PLUGINS_VERSION is the
// release of the standard plugins the DaemonSet installs on nodes.
const dockerfile = "../../dist/Dockerfile"

// newPlugins builds bridge and host-local of the release dist/Dockerfile
// names (v1.5 and later masquerade with nftables when told
// "ipMasqBackend": "nftables", or when the node has no iptables) into a
// directory it returns, from the module cache only, as tests/integration
// does (make deps-integration downloads them). It fails the test where CI is
// set, and skips it elsewhere, when it cannot.
func newPlugins(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^ARG CNI_PLUGINS_VERSION=(\S+)$`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("%s has no ARG CNI_PLUGINS_VERSION=…", dockerfile)
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		unmet(t, "needs the go command to build the CNI plugins")
	}
	modcache, err := exec.Command(goTool, "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatalf("go env GOMODCACHE: %v", err)
	}
	dir := t.TempDir()
	args := []string{"install", "-trimpath"}
	for _, pkg := range []string{"plugins/main/bridge", "plugins/ipam/host-local"} {
		args = append(args, "github.com/containernetworking/plugins/"+pkg+"@"+string(m[1]))
	}
	cmd := exec.Command(goTool, args...)
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+dir,
		"GOPROXY=file://"+filepath.Join(strings.TrimSpace(string(modcache)), "cache", "download"))
	if out, err := cmd.CombinedOutput(); err != nil {
		unmet(t, fmt.Sprintf("cannot build the CNI plugins %s from the module cache (make deps-integration downloads them): %v: %s", m[1], err, out))
	}
	return dir
}

// nftMasqRules are the comments of the rules in ns's nftables chain in
// which bridge masquerades pods with "ipMasqBackend": "nftables".
func nftMasqRules(t *testing.T, ns string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "chain", "inet", nftMasqTable, nftMasqChain).Output()
	if err != nil {
		return nil // no table, or no chain: no rule
	}
	var list struct {
		Nftables []struct {
			Rule *struct{ Comment string } `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("nft -j list chain in %s: %v: %s", ns, err, out)
	}
	var rules []string
	for _, e := range list.Nftables {
		if e.Rule != nil {
			rules = append(rules, e.Rule.Comment)
		}
	}
	return rules
}

// TestDelRemovesNFTablesMasquerade: bridge of the plugins release the image
// installs masquerades, when told "ipMasqBackend": "nftables" (or on a node
// without iptables), with one rule per pod address in nftables (table inet
// cni_plugins_masquerade), not in an iptables chain. agentd-cni looked for,
// and removed, only iptables chains: a DEL without the pod's namespace
// (containerd's once the sandbox's is closed) left the rule, and a DEL with
// nothing saved gave bridge ipMasq false, so bridge left it too; the rule
// then masqueraded the next pod given the address. Real bridge and
// host-local of that release in a namespace standing for the host.
func TestDelRemovesNFTablesMasquerade(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		unmet(t, "needs nft (apt-get install nftables)")
	}
	plugins := newPlugins(t)
	for _, tc := range []struct {
		name      string
		netnsGone bool
		wipe      bool // nothing saved at DEL
	}{
		{"saved, pod namespace there", false, false}, // bridge removes it
		{"pod namespace gone", true, false},
		{"nothing saved", false, true},
		{"nothing saved, pod namespace gone", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRuntime(t)
			r.cni = libcni.NewCNIConfigWithCacheDir([]string{r.cni.Path[0], plugins}, r.cacheDir, inNetns(r.host))
			l := r.bridgeList(t, "1.0.0", envBridgeMasq)
			l, err := libcni.ConfListFromBytes([]byte(strings.Replace(string(l.Bytes), `"type":"agentd-cni",`, `"type":"agentd-cni","delegate":{"ipMasqBackend":"nftables"},`, 1)))
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var rts []*libcni.RuntimeConf
			for _, id := range []string{"c1", "c2"} {
				rt := r.pod(id)
				rt.NetNS = filepath.Join(nsreap.Dir, netns(t, id))
				if _, err := r.cni.AddNetworkList(ctx, l, rt); err != nil {
					t.Fatalf("ADD %s: %v", id, err)
				}
				rts = append(rts, rt)
			}
			if got := nftMasqRules(t, r.host); len(got) != 2 {
				t.Fatalf("after ADD the host's nftables masquerade rules are %q, want one per pod", got)
			}
			if got := cniRules(t, r.host); len(got) > 0 {
				t.Fatalf("after ADD with nftables the host's iptables nat table has %q", got)
			}
			rt := rts[0]
			if tc.netnsGone {
				if err := nsreap.Delete(rt.NetNS); err != nil {
					t.Fatal(err)
				}
				rt.NetNS = ""
			}
			if tc.wipe {
				for _, name := range []string{"c1", "cbr0:c1:eth0"} {
					if err := os.Remove(filepath.Join(r.dataDir, name)); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := r.cni.DelNetworkList(ctx, l, rt); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			got := nftMasqRules(t, r.host)
			if len(got) != 1 || !strings.HasSuffix(got[0], "id: c2") {
				t.Errorf("after c1's DEL the host's nftables masquerade rules are %q, want c2's only", got)
			}
			if got := r.allocated(t); len(got) != 1 {
				t.Errorf("after c1's DEL host-local holds %q, want c2's address only", got)
			}
		})
	}
}
