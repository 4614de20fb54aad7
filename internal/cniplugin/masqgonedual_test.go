package cniplugin

import (
	"os/exec"
	"reflect"
	"strings"
	"testing"

	"github.com/coreos/go-iptables/iptables"
)

// TestDelSavedIPMasqChainGoneOneFamily: TestDelSavedIPMasqChainGone for a
// dual-stack pod whose IPv4 chain alone is gone (the IPv4 nat table
// reloaded by iptables-restore; ip6tables' untouched): bridge's DEL failed
// as it did with both gone ("Chain 'CNI-…' does not exist", code 999),
// since the IPv6 chain made the attachment look masqueraded. DEL gives the
// delegate ipMasq false and removes the IPv6 chain and its rule after it.
// Real bridge and host-local in a namespace standing for the host.
func TestDelSavedIPMasqChainGoneOneFamily(t *testing.T) {
	needRoot(t)
	r := newRuntime(t)
	l, rt := r.addMasqueradedPod(t, envBridgeMasq+"FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:5::1/64\n", func(chain string) {
		if v6 := hostIP6Rules(t, r.host, chain); len(v6) == 0 {
			t.Fatalf("ADD made no IPv6 masquerade chain %s", chain)
		}
	})
	host, chain := r.host, masqChainName("cbr0", "c1")
	r.delReleases(t, host, l, rt)
	if v6 := hostIP6Rules(t, host, chain); len(v6) > 0 {
		t.Errorf("after DEL the host's IPv6 nat table still has\n%s", strings.Join(v6, "\n"))
	}
}

// hostIP6Rules are the lines of ip6tables-save -t nat in namespace ns
// that name chain.
func hostIP6Rules(t *testing.T, ns, chain string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "ip6tables-save", "-t", "nat").CombinedOutput()
	if err != nil {
		t.Fatalf("ip6tables-save in %s: %v: %s", ns, err, out)
	}
	var rules []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, chain) {
			rules = append(rules, line)
		}
	}
	return rules
}

// TestSavedFamilies: the IP versions of a saved configuration's subnets,
// as agentd-cni saves them (ranges) and as flannel's plugin once did
// (subnet); none for one without.
func TestSavedFamilies(t *testing.T) {
	v4, v6 := iptables.ProtocolIPv4, iptables.ProtocolIPv6
	for conf, want := range map[string][]iptables.Protocol{
		`{"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}]]}}`:                                      {v4},
		`{"ipam":{"ranges":[[{"subnet":"10.244.5.0/24"}],[{"subnet":"fd00:10:244:5::/64"}]]}}`:    {v4, v6},
		`{"ipam":{"ranges":[[{"subnet":"fd00:10:244:5::/64"},{"subnet":"fd00:10:244:6::/64"}]]}}`: {v6},
		`{"ipam":{"subnet":"10.244.5.0/24"}}`:                                                     {v4},
		`{"ipam":{"ranges":[["x",{"subnet":7}]],"subnet":"bad"}}`:                                 nil,
		`{"ipam":[]}`: nil,
		`{}`:          nil,
	} {
		if got := savedFamilies(decode(t, []byte(conf))); !reflect.DeepEqual(got, want) {
			t.Errorf("savedFamilies(%s) = %v, want %v", conf, got, want)
		}
	}
}
