package cniplugin

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/internal/nsreap"
	"github.com/containernetworking/cni/libcni"
)

// TestDelSavedIPMasqChainGone: the configuration ADD saved says ipMasq
// (FLANNEL_IPMASQ=false), but the pod's masquerade chain is gone by the
// time of its DEL (the nat table reloaded by a firewall script, flushed by
// hand, or a bridge ADD that failed before making it), while the pod's
// namespace and interface are still there. Debian's bridge 1.1.1 with
// iptables-nft then fails its DEL on the missing chain ("Chain 'CNI-…'
// does not exist", code 999) after it has deleted the interface and freed
// the address, so the runtime's StopPodSandbox failed for nothing. DEL
// gives the delegate ipMasq only while the chain is there, as it does for
// a configuration it rebuilds. Real bridge and host-local in a namespace
// standing for the host, the pod in another.
func TestDelSavedIPMasqChainGone(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	l, rt := r.addMasqueradedPod(t, envBridgeMasq, nil)
	if got := cniRules(t, r.host); len(got) > 0 {
		t.Fatalf("the chain's removal left %q", got)
	}
	r.delReleases(t, r.host, l, rt)
}

// addMasqueradedPod adds pod c1, in a namespace of its own, to a bridge
// network of subnet.env env with ipMasq, calls made (if not nil) with the
// pod's masquerade chain, then removes that chain and its POSTROUTING rule
// from the host's IPv4 nat table, as a firewall script's reload does.
func (r *runtime) addMasqueradedPod(t *testing.T, env string, made func(chain string)) (*libcni.NetworkConfigList, *libcni.RuntimeConf) {
	t.Helper()
	l := r.bridgeList(t, "1.0.0", env)
	rt := r.pod("c1")
	rt.NetNS = filepath.Join(nsreap.Dir, netns(t, "p"))
	if _, err := r.cni.AddNetworkList(context.Background(), l, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	chain := masqChainName("cbr0", "c1")
	if made != nil {
		made(chain)
	}
	for _, rule := range cniRules(t, r.host) {
		if del, ok := strings.CutPrefix(rule, "-A POSTROUTING "); ok && strings.HasSuffix(rule, "-j "+chain) {
			hostIPTables(t, r.host, "-t nat -D POSTROUTING "+del)
		}
	}
	hostIPTables(t, r.host, "-t nat -F "+chain)
	hostIPTables(t, r.host, "-t nat -X "+chain)
	return l, rt
}

// hostIPTables runs iptables with args (split at spaces, quotes kept as
// iptables-save writes them) in namespace ns.
func hostIPTables(t *testing.T, ns, args string) {
	t.Helper()
	out, err := exec.Command("sh", "-c", "ip netns exec "+ns+" iptables "+args).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %s in %s: %v: %s", args, ns, err, out)
	}
}

// TestDelSavedIPMasq: with the pod's namespace there, DEL gives the
// delegate the saved ipMasq true only while the attachment's masquerading
// is there, or when the look-up fails; without the namespace the delegate
// removes nothing, and gets what was saved.
func TestDelSavedIPMasq(t *testing.T) {
	for _, tc := range []struct {
		name   string
		netns  bool
		chains map[string]bool
		hasErr error
		want   bool
	}{
		{"chain there", true, map[string]bool{"cbr0 c1": true}, nil, true},
		{"chain gone", true, nil, nil, false},
		{"another container's chain", true, map[string]bool{"cbr0 c2": true}, nil, false},
		{"look-up fails", true, nil, errors.New("xtables lock"), true},
		{"no namespace", false, nil, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.writeEnv(t, envBridgeMasq)
			if err := f.p.Add(f.args("c1", "")); err != nil {
				t.Fatal(err)
			}
			f.masq.chains, f.masq.hasErr = tc.chains, tc.hasErr
			a := f.args("c1", "")
			a.Netns = ""
			if tc.netns {
				a.Netns = filepath.Join(f.dir, "netns")
				if err := os.WriteFile(a.Netns, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.p.Del(a); err != nil {
				t.Fatal(err)
			}
			if c := f.exec.calls[len(f.exec.calls)-1]; c.command != "DEL" || c.conf["ipMasq"] != tc.want {
				t.Errorf("DEL ran %s with ipMasq %v, want DEL with %v", c.command, c.conf["ipMasq"], tc.want)
			}
		})
	}
}
