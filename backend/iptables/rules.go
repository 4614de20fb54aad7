// Package iptables keeps agentd's iptables rules as data and reconciles them
// with the kernel.
//
// Every rule agentd installs lives in a chain of its own, named with
// ChainPrefix (nat MasqChain, filter ForwardChain, mangle MarkChain), entered
// from a built-in chain by exactly one jump rule (and, for ForwardChain, from
// dockerd's DOCKER-USER chain where it exists). Those chains and the jumps
// into them are agentd's; every other rule and chain belongs to someone else
// and is never touched. That naming contract is what lets a restarted agent
// find, diff and clean up what an earlier run installed.
//
// The rule set is computed by pure functions (MasqRules, ForwardRules,
// MarkRules) into []Rule, which prints like iptables-save lines, so it can be
// diffed and compared with golden text. A Manager reads each table once per
// Reconcile (one iptables-save per table), compares our chains and jumps with
// the desired rules and, when they differ, replaces them in one
// iptables-restore --noflush transaction: the chains are never seen empty or
// half-written.
//
// IPv4 and IPv6 share one code path; a Family picks the binaries and the
// multicast range, nothing else.
package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Names of what we own in the kernel. Anything named with ChainPrefix in the
// tables a Manager handles is ours: Reconcile rewrites or deletes it.
const (
	ChainPrefix  = "AGENTD-"
	MasqChain    = ChainPrefix + "POSTRTG" // nat table, entered from POSTROUTING
	ForwardChain = ChainPrefix + "FWD"     // filter table, entered from FORWARD and DOCKER-USER
	MarkChain    = ChainPrefix + "MARK"    // mangle table, entered from FORWARD

	// DockerUserChain is the filter chain dockerd jumps to first in FORWARD
	// and leaves to its users' rules.
	DockerUserChain = "DOCKER-USER"

	// KubeProxyMasqMark is the mark kube-proxy sets (in KUBE-MARK-MASQ) on
	// packets it will masquerade itself in KUBE-POSTROUTING. Our chain returns
	// them untouched so they are not NATed twice.
	KubeProxyMasqMark = "0x4000/0x4000"

	masqComment    = "agentd masq"
	forwardComment = "agentd forward"
	markComment    = "agentd docker mark"
)

// Family is an IP family: it chooses iptables or ip6tables and the family's
// multicast range.
type Family uint8

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "IPv6"
	}
	return "IPv4"
}

// FamilyOf is the family of p's address.
func FamilyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// multicast is the range no masquerade rule applies to: multicast leaving the
// cluster network keeps its source.
func (f Family) multicast() string {
	if f == IPv6 {
		return "ff00::/8"
	}
	return "224.0.0.0/4"
}

// Rule is one iptables rule: Spec is the argument list after "-A Chain", in
// the order iptables-save prints it (addresses, then matches with the comment
// last, then the target), so a desired rule compares equal, token by token,
// to the same rule read back from the kernel.
type Rule struct {
	Table, Chain string
	Spec         []string
	// Counters are the rule's as iptables-save -c printed them; nil in
	// rules read without -c, and in desired rules. They are not part of
	// the rule: String, Equal and the diff of rules leave them out.
	Counters *Counters
}

// Counters are the packets and bytes a rule has matched, as the kernel keeps
// them: iptables-save -c prints them, "[packets:bytes]", before the rule. A
// rule written without counters starts at zero; iptables-restore -c, or a
// rule's own -c packets bytes, sets them.
type Counters struct {
	Packets, Bytes uint64
}

// String prints r as iptables-save does, e.g.
// `-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT`.
// The table is not printed: in iptables-save output it heads its section.
func (r Rule) String() string {
	var b strings.Builder
	b.WriteString("-A ")
	b.WriteString(quote(r.Chain))
	for _, t := range r.Spec {
		b.WriteByte(' ')
		b.WriteString(quote(t))
	}
	return b.String()
}

// args is r's Spec as String prints it, each token after a blank.
func (r Rule) args() string {
	return strings.TrimPrefix(r.String(), "-A "+quote(r.Chain))
}

// Equal reports whether r and o are the same rule in the same place.
func (r Rule) Equal(o Rule) bool {
	return r.Table == o.Table && r.Chain == o.Chain && slices.Equal(r.Spec, o.Spec)
}

// target is the chain or target r jumps (-j) or goes (-g) to, or "".
func (r Rule) target() string {
	for i := len(r.Spec) - 2; i >= 0; i-- {
		switch r.Spec[i] {
		case "-j", "--jump", "-g", "--goto":
			return r.Spec[i+1]
		}
	}
	return ""
}

// Owned reports whether chain is one of ours by name.
func Owned(chain string) bool { return strings.HasPrefix(chain, ChainPrefix) }

// jumpFirst says which built-in chains must run our jump before any other
// rule; elsewhere the jump is appended, and only its presence (exactly once)
// is checked, so software appending after us is never fought over.
//
// In nat POSTROUTING we go first so that our MASQUERADE of pod traffic
// leaving the cluster applies before any later SNAT or MASQUERADE rule could
// pick another source. Our RETURNs only leave our chain: later POSTROUTING
// rules still see those packets, which is why dockerd must run with
// --ip-masq=false when agentd masquerades, as with flannel. kube-proxy only
// checks that its own jump exists, so the two never fight over the top.
//
// In filter FORWARD we append, as flannel does: our chain only ACCEPTs, and
// placed first it would let cluster traffic bypass whatever network-policy or
// firewall chains the host puts in FORWARD. Appended, it rescues cluster
// traffic from a DROP policy (dockerd sets one) and nothing more. Docker 28's
// own DROP rules come before it, though: hence the jump from DOCKER-USER
// (ForwardRules), first in FORWARD, and for that reason limited to traffic
// from the cluster network to the cluster network.
var jumpFirst = map[[2]string]bool{
	{"nat", "POSTROUTING"}: true,
}

// jumpIfChain lists chains of other software that get our jump only while
// they exist: we never create nor delete them. The jump is inserted at the
// top; from then on it is only checked to be there once and ahead of any
// unconditional RETURN (Docker before 28 ended DOCKER-USER with one), so
// rules their owner inserts above it later are not fought over.
var jumpIfChain = map[[2]string]bool{
	{"filter", DockerUserChain}: true,
}

// MasqRules is the nat rule set for --ip-masq: the jump from POSTROUTING and,
// in MasqChain, in this order:
//
//  1. packets kube-proxy marked for its own masquerade: RETURN (no double NAT);
//  2. cluster network to cluster network: RETURN (pods see each other's
//     addresses, across hosts too);
//  3. cluster network to anywhere else except multicast: MASQUERADE;
//  4. outside the cluster network to our own subnet: RETURN (traffic reaching
//     our pods keeps its source);
//  5. outside the cluster network to another host's subnet: MASQUERADE, so
//     replies come back through this host (e.g. this host talking to a
//     remote pod through the overlay).
//
// This is flannel's rule set, so masquerading is the same whichever agent a
// node runs. Rule 2 is flannel's single cluster-to-cluster RETURN (flannel
// now writes it as two rules, own subnet to cluster and cluster to own
// subnet, to serve several cluster networks); with one network it also keeps
// pod-to-pod traffic passing through this host from being masqueraded.
//
// randomFully adds --random-fully to the MASQUERADE targets (source ports
// fully randomized, which avoids conntrack insertion races when many
// connections start at once); flannel adds it whenever iptables supports it
// (Manager.RandomFully) unless the operator turns it off.
//
// network and ownSubnet must be of one family and ownSubnet inside network,
// as the subnet package guarantees; both are used masked.
func MasqRules(network, ownSubnet netip.Prefix, randomFully bool) []Rule {
	cluster, own := network.Masked().String(), ownSubnet.Masked().String()
	masq := []string{"-j", "MASQUERADE"}
	if randomFully {
		masq = append(masq, "--random-fully")
	}
	rule := func(match []string, target ...string) Rule {
		spec := append(append(append([]string{}, match...), "-m", "comment", "--comment", masqComment), target...)
		return Rule{Table: "nat", Chain: MasqChain, Spec: spec}
	}
	return []Rule{
		jump("nat", "POSTROUTING", MasqChain, masqComment),
		rule([]string{"-m", "mark", "--mark", KubeProxyMasqMark}, "-j", "RETURN"),
		rule([]string{"-s", cluster, "-d", cluster}, "-j", "RETURN"),
		rule([]string{"-s", cluster, "!", "-d", FamilyOf(network).multicast()}, masq...),
		rule([]string{"!", "-s", cluster, "-d", own}, "-j", "RETURN"),
		rule([]string{"!", "-s", cluster, "-d", cluster}, masq...),
	}
}

// ForwardRules is the filter rule set that lets the host forward cluster
// traffic whatever the FORWARD policy: the jump from FORWARD, the jump from
// DOCKER-USER for traffic from the cluster network to the cluster network
// (made only where dockerd has that chain) and, in ForwardChain, ACCEPT from
// and to the cluster network.
//
// The DOCKER-USER jump is for Docker 28 and later, whose DOCKER chain drops
// traffic routed to a container from outside its bridge (overlay traffic to
// containers on docker0) before our appended FORWARD jump is reached. Docker
// evaluates DOCKER-USER first in FORWARD, for its users' rules. Only
// cluster-to-cluster traffic jumps there, so Docker's isolation of its other
// networks and its drop of traffic from outside the cluster stay in force.
func ForwardRules(network netip.Prefix) []Rule {
	cluster := network.Masked().String()
	rule := func(dir string) Rule {
		return Rule{Table: "filter", Chain: ForwardChain,
			Spec: []string{dir, cluster, "-m", "comment", "--comment", forwardComment, "-j", "ACCEPT"}}
	}
	return []Rule{
		jump("filter", "FORWARD", ForwardChain, forwardComment),
		{Table: "filter", Chain: DockerUserChain,
			Spec: []string{"-s", cluster, "-d", cluster, "-m", "comment", "--comment", forwardComment, "-j", ForwardChain}},
		rule("-s"),
		rule("-d"),
	}
}

func jump(table, from, to, comment string) Rule {
	return Rule{Table: table, Chain: from, Spec: []string{"-m", "comment", "--comment", comment, "-j", to}}
}

// validate checks that rules are something a Manager may own: rules inside
// our chains, or jumps from any other chain into one of ours. It also refuses
// what iptables-restore's line format cannot carry.
func validate(rules []Rule) error {
	for _, r := range rules {
		if r.Table == "" || r.Chain == "" {
			return fmt.Errorf("rule %q: empty table or chain", r)
		}
		if !Owned(r.Chain) && !Owned(r.target()) {
			return fmt.Errorf("rule %q in table %s: not in one of our (%s*) chains nor a jump into one", r, r.Table, ChainPrefix)
		}
		for _, t := range append([]string{r.Table, r.Chain}, r.Spec...) {
			if strings.ContainsAny(t, "\x00\n\r") {
				return fmt.Errorf("rule %q: token %q has a NUL or line break", r, t)
			}
		}
		if strings.ContainsAny(r.Table+r.Chain, " \t\"") {
			return fmt.Errorf("rule %q: table or chain name has blanks or quotes", r)
		}
	}
	return nil
}
