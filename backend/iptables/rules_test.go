package iptables

import (
	"net/netip"
	"strings"
	"testing"
)

var (
	testNetwork = netip.MustParsePrefix("10.244.0.0/16")
	testSubnet  = netip.MustParsePrefix("10.244.5.0/24")
)

// goldenRules is the whole IPv4 rule set for network 10.244.0.0/16 and our
// subnet 10.244.5.0/24, masquerade with --random-fully. The DOCKER-USER jump
// is made only where that chain exists.
const goldenRules = `-A POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-A AGENTD-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.5.0/24 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
`

func testRules(randomFully bool) []Rule {
	return append(MasqRules(testNetwork, testSubnet, randomFully), ForwardRules(testNetwork)...)
}

func text(rules []Rule) string {
	var b strings.Builder
	for _, r := range rules {
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	return b.String()
}

func TestRulesGolden(t *testing.T) {
	for _, tc := range []struct {
		name            string
		network, subnet string
		randomFully     bool
		want            string
	}{
		{"ipv4", "10.244.0.0/16", "10.244.5.0/24", true, goldenRules},
		{"ipv4 without random-fully", "10.244.0.0/16", "10.244.5.0/24", false,
			strings.ReplaceAll(goldenRules, " --random-fully", "")},
		// Host bits are ignored: the rules name the networks.
		{"ipv4 unmasked input", "10.244.7.7/16", "10.244.5.9/24", true, goldenRules},
		{"ipv6", "fd10:244::/56", "fd10:244:0:5::/64", true, `-A POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-A AGENTD-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s fd10:244::/56 -d fd10:244::/56 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s fd10:244::/56 ! -d ff00::/8 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A AGENTD-POSTRTG ! -s fd10:244::/56 -d fd10:244:0:5::/64 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG ! -s fd10:244::/56 -d fd10:244::/56 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A DOCKER-USER -s fd10:244::/56 -d fd10:244::/56 -m comment --comment "agentd forward" -j AGENTD-FWD
-A AGENTD-FWD -s fd10:244::/56 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d fd10:244::/56 -m comment --comment "agentd forward" -j ACCEPT
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, s := netip.MustParsePrefix(tc.network), netip.MustParsePrefix(tc.subnet)
			rules := append(MasqRules(n, s, tc.randomFully), ForwardRules(n)...)
			if got := text(rules); got != tc.want {
				t.Errorf("rules:\n%s\nwant:\n%s", got, tc.want)
			}
			if err := validate(rules); err != nil {
				t.Error(err)
			}
		})
	}
}

// The kube-proxy mark rule must be the first rule of our nat chain: a marked
// packet must not reach our MASQUERADE.
func TestMasqRulesKubeProxyMarkFirst(t *testing.T) {
	var inChain []Rule
	for _, r := range MasqRules(testNetwork, testSubnet, true) {
		if r.Chain == MasqChain {
			inChain = append(inChain, r)
		}
	}
	if len(inChain) == 0 || !strings.Contains(inChain[0].String(), "--mark "+KubeProxyMasqMark) || inChain[0].target() != "RETURN" {
		t.Fatalf("first rule of %s is %v, want the kube-proxy mark RETURN", MasqChain, inChain)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		rule Rule
		ok   bool
	}{
		{"our chain", Rule{Table: "nat", Chain: MasqChain, Spec: []string{"-j", "RETURN"}}, true},
		{"jump into ours", Rule{Table: "nat", Chain: "POSTROUTING", Spec: []string{"-j", MasqChain}}, true},
		{"goto into ours", Rule{Table: "nat", Chain: "POSTROUTING", Spec: []string{"-g", MasqChain}}, true},
		{"foreign chain", Rule{Table: "nat", Chain: "POSTROUTING", Spec: []string{"-j", "MASQUERADE"}}, false},
		{"no table", Rule{Table: "", Chain: MasqChain, Spec: nil}, false},
		{"newline in token", Rule{Table: "nat", Chain: MasqChain, Spec: []string{"-m", "comment", "--comment", "a\nb"}}, false},
		{"blank in chain", Rule{Table: "nat", Chain: "AGENTD-A B", Spec: nil}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := validate([]Rule{tc.rule}); (err == nil) != tc.ok {
				t.Errorf("validate(%q) = %v, want ok=%v", tc.rule, err, tc.ok)
			}
		})
	}
}

func TestFamily(t *testing.T) {
	if FamilyOf(testNetwork) != IPv4 || FamilyOf(netip.MustParsePrefix("fd10::/64")) != IPv6 {
		t.Error("FamilyOf")
	}
	if IPv4.String() != "IPv4" || IPv6.String() != "IPv6" {
		t.Error("Family.String")
	}
}
