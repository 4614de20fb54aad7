package cniplugin

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// iptablesListed is `iptables -t nat -S POSTROUTING` (iptables 1.8.9,
// nf_tables) and the same of ip6tables, as go-iptables' List gives it, on a
// host where bridge of containernetworking/plugins v1.10.0 masquerades the
// dual-stack pod 0011…eeff of network cbr0; then lines of the shapes that
// kube-proxy and dockerd add there.
var iptablesListed = []string{
	`-P POSTROUTING ACCEPT`,
	`-A POSTROUTING -s 10.244.5.4/32 -m comment --comment "name: \"cbr0\" id: \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"" -j CNI-8e734362e0d0a11de662fb58`,
	`-A POSTROUTING -s fd00:10:244:5::3/128 -m comment --comment "name: \"cbr0\" id: \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"" -j CNI-8e734362e0d0a11de662fb58`,
	`-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING`,
	`-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE`,
}

const iptablesPod = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// TestMasqJumpSourceListed: in iptables' real listing the source of each
// rule jumping to the pod's chain is read, and no other rule is taken.
func TestMasqJumpSourceListed(t *testing.T) {
	chain := masqChainName("cbr0", iptablesPod)
	if chain != "CNI-8e734362e0d0a11de662fb58" {
		t.Fatalf("chain %s, not the one bridge made", chain)
	}
	var got []string
	for _, r := range iptablesListed {
		if src, ok := masqJumpSource(r, chain); ok {
			got = append(got, src)
		}
		if src, ok := masqJumpSource(r, "MASQUERADE"); ok && src != "172.17.0.0/16" {
			t.Errorf("%s: source %q", r, src)
		}
	}
	if want := []string{"10.244.5.4/32", "fd00:10:244:5::3/128"}; !slices.Equal(got, want) {
		t.Errorf("sources %q, want %q", got, want)
	}
}

// iptablesComment is the comment of bridge's rules as iptables -S prints
// it: quoted, with '"' and '\' escaped.
func iptablesComment(network, containerID string) string {
	esc := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + esc.Replace(fmt.Sprintf("name: %q id: %q", network, containerID)) + `"`
}

// TestMasqJumpSourceNegated: a rule jumping to the pod's chain from every
// source but one (`! -s`, as iptables -S lists it, or `-s !` as old
// iptables took it) names no source: bridge writes no such rule, and
// Remove's delete of bridge's rule with that address (`-s X`, or `-s !`,
// which iptables 1.8.9 refuses: "Bad argument") cannot delete it. It
// stays, and the chain with it: Remove fails, as for any rule of another
// shape.
func TestMasqJumpSourceNegated(t *testing.T) {
	chain := masqChainName("cbr0", iptablesPod)
	comment := iptablesComment("cbr0", iptablesPod)
	for _, r := range []string{
		"-A POSTROUTING ! -s 10.244.5.4/32 -m comment --comment " + comment + " -j " + chain,
		"-A POSTROUTING ! -s fd00:10:244:5::3/128 -j " + chain,
		"-A POSTROUTING -s ! 10.244.5.4/32 -j " + chain,
	} {
		if src, ok := masqJumpSource(r, chain); ok {
			t.Errorf("%s: source %q, want none", r, src)
		}
	}
}

// FuzzMasqJumpSource: any line is read without a panic; a source read is
// a field of the line, after a "-s" field that is not the first nor
// negated ("!" before it, or as its value), and the line's last two fields
// are "-j" and the chain. And bridge's rule as
// iptables lists it, for any network name and container ID (a comment
// holding spaces, "-s" or "-j" included) and any source address, gives
// that source back, and nothing for another chain.
func FuzzMasqJumpSource(f *testing.F) {
	for _, r := range iptablesListed {
		f.Add(r, "cbr0", iptablesPod, []byte{10, 244, 5, 4}, 32)
	}
	f.Add("-A POSTROUTING -s", "a -s 10.0.0.1/32 -j CNI-0", "c1", []byte{0xfd, 0, 0, 0x10, 0x2, 0x44, 0, 5, 0, 0, 0, 0, 0, 0, 0, 3}, 128)
	f.Add("-s -j CNI-8e734362e0d0a11de662fb58", "\"\\\n", "", []byte{}, 0)
	f.Add("-A POSTROUTING ! -s 10.0.0.0/8 -j CNI-8e734362e0d0a11de662fb58", "cbr0", iptablesPod, []byte{0, 0, 0, 0}, 0)
	f.Fuzz(func(t *testing.T, rule, network, containerID string, addr []byte, bits int) {
		chain := masqChainName(network, containerID)
		for _, c := range []string{chain, "MASQUERADE", "", "-s"} {
			src, ok := masqJumpSource(rule, c)
			if !ok {
				if src != "" {
					t.Fatalf("masqJumpSource(%q, %q) = %q, false", rule, c, src)
				}
				continue
			}
			fields := strings.Fields(rule)
			i := slices.Index(fields, "-s")
			if i <= 0 || i+1 >= len(fields) || fields[i+1] != src {
				t.Fatalf("masqJumpSource(%q, %q) = %q: not the field after the first -s (not the first field)", rule, c, src)
			}
			if fields[i-1] == "!" || src == "!" {
				t.Fatalf("masqJumpSource(%q, %q) = %q: a negated source", rule, c, src)
			}
			if n := len(fields); fields[n-2] != "-j" || fields[n-1] != c {
				t.Fatalf("masqJumpSource(%q, %q) = %q: the line does not end in -j %s", rule, c, src, c)
			}
		}

		a, ok := netip.AddrFromSlice(addr)
		if !ok {
			a = netip.IPv4Unspecified()
		}
		p, err := a.Prefix(bits)
		if err != nil {
			p = netip.PrefixFrom(a, a.BitLen())
		}
		line := fmt.Sprintf("-A POSTROUTING -s %s -m comment --comment %s -j %s", p, iptablesComment(network, containerID), chain)
		if src, ok := masqJumpSource(line, chain); !ok || src != p.String() {
			t.Fatalf("masqJumpSource(%q) = %q, %v; want %s", line, src, ok, p)
		}
		if src, ok := masqJumpSource(line, chain+"x"); ok {
			t.Fatalf("masqJumpSource(%q, another chain) = %q", line, src)
		}
	})
}
