package iptables

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Mark is a firewall mark with the mask of the bits it stands for, as
// dockerd's --bridge-accept-fwmark takes it: a packet carries it when
// (packet mark & Mask) == Value. The zero Mark is no mark. A Mark that
// ParseMark returned, or whose Check is nil, has Value inside Mask, Value
// not 0, and Mask clear of kube-proxy's masquerade bit.
type Mark struct {
	Value, Mask uint32
}

// IsZero reports whether m is the zero Mark (no mark).
func (m Mark) IsZero() bool { return m == Mark{} }

// String prints m as value/mask in hexadecimal, the form iptables-save
// prints MARK's --set-xmark in and ParseMark reads back.
func (m Mark) String() string { return fmt.Sprintf("0x%x/0x%x", m.Value, m.Mask) }

// kubeProxyMasqBit is the bit of KubeProxyMasqMark.
const kubeProxyMasqBit = 0x4000

// ParseMark reads "value[/mask]", each a 32-bit number in Go's notation
// (decimal, 0x hexadecimal, 0o or leading-0 octal, 0b binary), as dockerd's
// --bridge-accept-fwmark does; a missing mask is 0xffffffff, the whole mark,
// as in dockerd. The result must pass Check.
func ParseMark(s string) (Mark, error) {
	vs, ms, hasMask := strings.Cut(s, "/")
	v, err := parseMarkNumber("mark", vs)
	if err != nil {
		return Mark{}, err
	}
	m := Mark{Value: v, Mask: 0xffffffff}
	if hasMask {
		if m.Mask, err = parseMarkNumber("mask", ms); err != nil {
			return Mark{}, err
		}
	}
	if err := m.Check(); err != nil {
		if !hasMask {
			return Mark{}, fmt.Errorf("%w (without a mask, the mask is 0xffffffff, the whole mark)", err)
		}
		return Mark{}, err
	}
	return m, nil
}

func parseMarkNumber(what, s string) (uint32, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s: want value/mask, e.g. 0x200000/0x200000", what)
	}
	n, err := strconv.ParseUint(s, 0, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a 32-bit number (decimal, or hexadecimal with 0x)", what, s)
	}
	return uint32(n), nil
}

// Check reports why m cannot be the mark agentd sets for dockerd, or nil.
// agentd sets the mask's bits to Value and leaves the others alone, so a
// Value with bits outside Mask could never match, a zero Value is what every
// unmarked packet carries, and a Mask covering kube-proxy's masquerade bit
// would clear that bit on cluster traffic kube-proxy marked for its own
// masquerade.
func (m Mark) Check() error {
	switch {
	case m.Value == 0:
		return errors.New("the mark must not be 0: every packet nobody marked carries 0")
	case m.Value&^m.Mask != 0:
		return fmt.Errorf("mark 0x%x has bits outside mask 0x%x, so no packet could match it", m.Value, m.Mask)
	case m.Mask&kubeProxyMasqBit != 0:
		return fmt.Errorf("mask 0x%x covers 0x%x, kube-proxy's masquerade bit, which agentd would then overwrite; pick bits no other software uses, e.g. 0x200000/0x200000, and give dockerd the same", m.Mask, kubeProxyMasqBit)
	}
	return nil
}

// MarkRules is the mangle rule set for Docker's nftables firewall
// (dockerd --firewall-backend=nftables --bridge-accept-fwmark=m): the jump
// from mangle FORWARD and, in MarkChain, one rule setting m's bits (and no
// others) on traffic from the cluster network to the cluster network.
//
// That firewall keeps its rules in its own nftables table, where a forward
// base chain at priority filter drops packets routed into a bridge from
// another interface (overlay traffic to containers on docker0), and an
// ACCEPT in our filter chains does not stop it: in nftables an accept ends
// only its own base chain. Docker accepts, instead, forwarded packets that
// carry the mark its --bridge-accept-fwmark names; mangle FORWARD (priority
// -150, in iptables-nft and legacy alike) runs before Docker's chain. As with
// the DOCKER-USER jump (ForwardRules), only cluster-to-cluster traffic is
// marked, so Docker's drop of traffic from outside the cluster stays in
// force.
//
// m must pass Check.
func MarkRules(network netip.Prefix, m Mark) []Rule {
	cluster := network.Masked().String()
	return []Rule{
		jump("mangle", "FORWARD", MarkChain, markComment),
		{Table: "mangle", Chain: MarkChain,
			Spec: []string{"-s", cluster, "-d", cluster, "-m", "comment", "--comment", markComment, "-j", "MARK", "--set-xmark", m.String()}},
	}
}
