package iptables

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

// The operations of a FuzzReconcileSequence input, two bytes each: the
// first byte's value modulo seqOps picks the operation, the second is its
// argument.
const (
	seqReconcile   = iota // desired set arg%4 (see seqDesired)
	seqTamper             // what other software may do to our rules, arg picks which
	seqDockerUser         // dockerd makes DOCKER-USER, or deletes it (arg's low bit: with a RETURN)
	seqReload             // a restore of nat (arg even) or filter as saved without -c
	seqTraffic            // arg+1 bytes counted on every rule of nat
	seqFailChainOp        // fail the (arg>>2)%4-th chain op of kind arg%3 (new, flush, delete) of the next restores, once
	seqOps
)

var seqChainOps = [3]string{"new", "flush", "delete"}

// seqDesired are the rule sets a sequence reconciles to: all rules, masquerade
// alone, all rules for another subnet of ours, none.
func seqDesired(i byte) []Rule {
	switch i % 4 {
	case 0:
		return testRules(true)
	case 1:
		return MasqRules(testNetwork, testSubnet, true)
	case 2:
		return append(MasqRules(testNetwork, netip.MustParsePrefix("10.244.9.0/24"), true), ForwardRules(testNetwork)...)
	}
	return nil
}

// seqTampering is what other software may do to a table holding ours: one
// may fail (a rule or chain not there); it then changes nothing.
func seqTampering(f *fake, arg byte) {
	n := int(arg>>4) + 1
	ops := []func(){
		func() { _ = f.apply("nat", fmt.Sprintf("*nat\n-D AGENTD-POSTRTG %d\nCOMMIT\n", n)) },
		func() { _ = f.apply("filter", fmt.Sprintf("*filter\n-D AGENTD-FWD %d\nCOMMIT\n", n)) },
		func() { _ = f.apply("nat", fmt.Sprintf("*nat\n-D POSTROUTING %d\nCOMMIT\n", n)) },
		func() { _ = f.apply("filter", fmt.Sprintf("*filter\n-D FORWARD %d\nCOMMIT\n", n)) },
		func() { _ = f.apply("nat", "*nat\n:AGENTD-POSTRTG - [0:0]\nCOMMIT\n") },
		func() {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-I POSTROUTING %d -s 198.51.100.%d/32 -j RETURN\nCOMMIT\n", n%2+1, arg))
		},
		func() {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-I POSTROUTING %d -m comment --comment \"agentd masq\" -j AGENTD-POSTRTG\nCOMMIT\n", n%2+1))
		},
		func() {
			_ = f.apply("filter", "*filter\n:AGENTD-OLD - [0:0]\n-A AGENTD-OLD -j ACCEPT\n-A INPUT -j AGENTD-OLD\nCOMMIT\n")
		},
		func() {
			_ = f.apply("nat", "*nat\n-A AGENTD-POSTRTG -j MASQUERADE\n-I AGENTD-POSTRTG 1 -j RETURN\nCOMMIT\n")
		},
		func() {
			_ = f.apply("filter", "*filter\n-D FORWARD -m comment --comment \"agentd forward\" -j AGENTD-FWD\n:AGENTD-FWD - [0:0]\n-X AGENTD-FWD\nCOMMIT\n")
		},
		func() { _ = f.apply("filter", fmt.Sprintf("*filter\n-D DOCKER-USER %d\nCOMMIT\n", n%2+1)) },
		func() {
			_ = f.apply("filter", "*filter\n-A DOCKER-USER "+strings.TrimPrefix(dockerUserJump, "-A DOCKER-USER ")+"\nCOMMIT\n")
		},
	}
	ops[int(arg&15)%len(ops)]()
}

// ourPart is, per chain of table, the rules of ours in it (those in our
// chains, and jumps into them from others), as iptables-save prints them,
// and the chains of ours there.
func ourPart(f *fake, table string) (rules map[string][]string, chains []string) {
	rules = map[string][]string{}
	t := f.tables[table]
	if t == nil {
		return rules, nil
	}
	for _, c := range t.chains {
		if Owned(c.name) {
			chains = append(chains, c.name)
		}
		for _, r := range c.rules {
			rule := Rule{Table: table, Chain: c.name, Spec: r.spec}
			if Owned(c.name) || Owned(rule.target()) {
				rules[c.name] = append(rules[c.name], rule.String())
			}
		}
	}
	return rules, chains
}

// foreignPart is table without anything of ours, as iptables-save prints it.
func foreignPart(f *fake, table string) string {
	t := f.tables[table]
	if t == nil {
		return ""
	}
	var lines []string
	for _, line := range strings.Split(t.text(table, false), "\n") {
		if !strings.Contains(line, ChainPrefix) {
			lines = append(lines, line)
		}
	}
	return strings.Join(lines, "\n")
}

// wantPart is ourPart of table holding exactly want, where the chains of
// jumpIfChain there are those of have.
func wantPart(f *fake, table string, want []Rule) (rules map[string][]string, chains []string) {
	rules = map[string][]string{}
	t := f.tables[table]
	for _, r := range want {
		if r.Table != table {
			continue
		}
		if jumpIfChain[[2]string{table, r.Chain}] && (t == nil || t.chain(r.Chain) == nil) {
			continue
		}
		rules[r.Chain] = append(rules[r.Chain], r.String())
		for _, c := range []string{r.Chain, r.target()} {
			if Owned(c) && !slices.Contains(chains, c) {
				chains = append(chains, c)
			}
		}
	}
	return rules, chains
}

func samePart(f *fake, table string, want []Rule) bool {
	hr, hc := ourPart(f, table)
	wr, wc := wantPart(f, table, want)
	slices.Sort(hc)
	slices.Sort(wc)
	if !slices.Equal(hc, wc) || len(hr) != len(wr) {
		return false
	}
	for c, rules := range wr {
		if !slices.Equal(hr[c], rules) {
			return false
		}
	}
	return true
}

// FuzzReconcileSequence plays random sequences of Reconciles to several
// rule sets (removal included), of what other software does to our rules
// and chains, of dockerd making and deleting DOCKER-USER, of reloads and
// traffic, and of iptables-restore failing a chain's creation, flush or
// deletion (the whole restore then fails and changes nothing). After each
// Reconcile:
//
//   - rules and chains of other software are as before it;
//   - Wrote(table) says exactly which tables changed;
//   - when it succeeded: our part of each table is exactly the desired
//     rules (our POSTROUTING jump first, our DOCKER-USER jump ahead of a
//     RETURN, where there is one), every rule of ours in nat carries the
//     stamp, and a second Reconcile changes nothing;
//   - it failed only if a failure was due, and then names a table;
//   - NewChainJumps only when all it wrote was our jump into a DOCKER-USER
//     (placed there, whatever that chain held) that was not deleted holding
//     it before (one made again after such a deletion is a repair:
//     Rewritten).
func FuzzReconcileSequence(f *testing.F) {
	op := func(o, arg byte) []byte { return []byte{o, arg} }
	seq := func(ops ...[]byte) []byte { return slices.Concat(ops...) }
	failOp := func(kind, nth byte) byte { return kind | nth<<2 }
	f.Add(seq(op(seqReconcile, 0), op(seqTamper, 4), op(seqFailChainOp, failOp(1, 0)), op(seqReconcile, 0), op(seqReconcile, 0)))
	f.Add(seq(op(seqFailChainOp, failOp(0, 0)), op(seqReconcile, 0), op(seqReconcile, 0)))
	f.Add(seq(op(seqReconcile, 0), op(seqFailChainOp, failOp(2, 0)), op(seqReconcile, 1), op(seqReconcile, 3), op(seqReconcile, 3)))
	f.Add(seq(op(seqReconcile, 0), op(seqDockerUser, 1), op(seqFailChainOp, failOp(1, 0)), op(seqReconcile, 0), op(seqReconcile, 0)))
	f.Add(seq(op(seqDockerUser, 0), op(seqReconcile, 0), op(seqDockerUser, 0), op(seqReconcile, 0), op(seqDockerUser, 0), op(seqReconcile, 0)))
	f.Add(seq(op(seqReconcile, 0), op(seqReload, 0), op(seqFailChainOp, failOp(1, 0)), op(seqReconcile, 0), op(seqTraffic, 9), op(seqReconcile, 0)))
	f.Add(seq(op(seqReconcile, 2), op(seqTamper, 7), op(seqFailChainOp, failOp(2, 0)), op(seqReconcile, 0), op(seqReconcile, 0)))
	f.Fuzz(func(t *testing.T, ops []byte) {
		if len(ops) > 64 {
			ops = ops[:64]
		}
		fk := newFake()
		seedForeign(t, fk)
		m := newManager(IPv4, fk, true, false, logr.Discard())

		// A chain op due to fail: the nth of its kind from now on.
		failKind, failNth, failed := "", 0, false
		fk.chainErr = func(op, table, chain string) error {
			if op != failKind {
				return nil
			}
			if failNth--; failNth >= 0 {
				return nil
			}
			failKind, failed = "", true
			return fmt.Errorf("fake: %s chain %s in %s refused", op, chain, table)
		}

		// duHeld: DOCKER-USER held our jump when the last Reconcile was
		// done with it; lost: a DOCKER-USER so deleted since.
		duHeld, lost := false, false
		holdsJump := func() bool {
			t := fk.tables["filter"]
			c := t.chain(DockerUserChain)
			return c != nil && slices.ContainsFunc(c.rules, func(r fakeRule) bool { return Rule{Spec: r.spec}.target() == ForwardChain })
		}
		var log []string
		fail := func(format string, a ...any) {
			t.Helper()
			t.Fatalf("after\n  %s\n%s\ntables:\n%s", strings.Join(log, "\n  "), fmt.Sprintf(format, a...), fk.tables["filter"].text("filter", true)+fk.tables["nat"].text("nat", true))
		}
		tables := []string{"filter", "mangle", "nat"}

		for k := 0; k+1 < len(ops); k += 2 {
			o, arg := ops[k]%seqOps, ops[k+1]
			switch o {
			case seqReconcile:
				want := seqDesired(arg)
				log = append(log, fmt.Sprintf("Reconcile desired #%d", arg%4))
				before := map[string]string{}
				foreign := map[string]string{}
				for _, tb := range tables {
					if fk.tables[tb] != nil {
						before[tb] = fk.tables[tb].text(tb, true)
					}
					foreign[tb] = foreignPart(fk, tb)
				}
				// Filter lacks nothing of ours outside DOCKER-USER, for
				// NewChainJumps (a failure elsewhere may come with it).
				onlyDockerUser := fk.tables["filter"].chain(DockerUserChain) != nil &&
					func() bool {
						hr, _ := ourPart(fk, "filter")
						wr, _ := wantPart(fk, "filter", want)
						delete(wr, DockerUserChain)
						delete(hr, DockerUserChain)
						return fmt.Sprint(hr) == fmt.Sprint(wr)
					}()
				wasLost := lost
				failedBefore := failed
				change, err := m.Reconcile(want)
				for _, tb := range tables {
					after := ""
					if fk.tables[tb] != nil {
						after = fk.tables[tb].text(tb, true)
					}
					if changed := after != before[tb]; changed != m.Wrote(tb) {
						fail("table %s changed %v, Wrote %v", tb, changed, m.Wrote(tb))
					}
					if got := foreignPart(fk, tb); got != foreign[tb] {
						fail("foreign part of %s\n%s\nwas\n%s", tb, got, foreign[tb])
					}
				}
				if err != nil {
					if failed == failedBefore {
						fail("Reconcile failed without a refused chain op: %v", err)
					}
					if !strings.Contains(err.Error(), "write table ") {
						fail("error names no table: %v", err)
					}
				}
				if change == NewChainJumps && (wasLost || !onlyDockerUser) {
					fail("NewChainJumps; before it, DOCKER-USER lost with our jump %v, only its jump missing %v", wasLost, onlyDockerUser)
				}
				if err == nil || !strings.Contains(err.Error(), "table filter") {
					// Done with filter: a DOCKER-USER there now is
					// found, and one gone with no jump wanted from it
					// lost nothing.
					if fk.tables["filter"].chain(DockerUserChain) != nil {
						duHeld, lost = holdsJump(), false
					} else if !slices.ContainsFunc(want, func(r Rule) bool { return r.Chain == DockerUserChain }) {
						lost = false
					}
				}
				failed = false
				if err != nil {
					continue
				}
				for _, tb := range tables {
					if !samePart(fk, tb, want) {
						hr, hc := ourPart(fk, tb)
						fail("our part of %s: %q %q, want exactly\n%s", tb, hr, hc, text(want))
					}
				}
				if nat := fk.tables["nat"]; len(want) > 0 && want[0].Table == "nat" {
					if (Rule{Spec: nat.chain("POSTROUTING").rules[0].spec}).target() != MasqChain {
						fail("POSTROUTING does not start with our jump")
					}
					for _, c := range nat.chains {
						for _, r := range c.rules {
							rule := Rule{Spec: r.spec}
							if (Owned(c.name) || Owned(rule.target())) && r.counters.Bytes < stampBytes {
								fail("rule %s of ours in nat unstamped: %+v", rule, r.counters)
							}
						}
					}
				}
				if du := fk.tables["filter"].chain(DockerUserChain); du != nil && behindReturn(inChain(fakeRules("filter", du), DockerUserChain)) {
					fail("our DOCKER-USER jump behind a RETURN")
				}
				if c, err := m.Reconcile(want); c != Unchanged || err != nil {
					fail("second Reconcile: %v, %v", c, err)
				}
			case seqTamper:
				log = append(log, fmt.Sprintf("tamper #%d", arg&15))
				seqTampering(fk, arg)
			case seqDockerUser:
				if fk.tables["filter"].chain(DockerUserChain) == nil {
					log = append(log, "dockerd makes DOCKER-USER")
					lines := []string{":DOCKER-USER - [0:0]", "-I FORWARD 1 -j DOCKER-USER"}
					if arg&1 == 1 {
						lines = append(lines, "-A DOCKER-USER -j RETURN")
					}
					fk.must(t, "filter", lines...)
					break
				}
				log = append(log, "DOCKER-USER deleted")
				// Its jump from FORWARD (dockerd's, the only one) too,
				// unless tampering took it.
				var lines []string
				if slices.ContainsFunc(fk.tables["filter"].chain("FORWARD").rules, func(r fakeRule) bool {
					return Rule{Spec: r.spec}.target() == DockerUserChain
				}) {
					lines = append(lines, "-D FORWARD -j DOCKER-USER")
				}
				fk.must(t, "filter", append(lines, ":DOCKER-USER - [0:0]", "-X DOCKER-USER")...)
				if duHeld {
					lost = true
				}
				duHeld = false
			case seqReload:
				tb := "nat"
				if arg&1 == 1 {
					tb = "filter"
				}
				log = append(log, "reload "+tb)
				fk.reload(t, tb)
			case seqTraffic:
				log = append(log, fmt.Sprintf("traffic %d bytes", int(arg)+1))
				fk.traffic("nat", uint64(arg)+1)
			case seqFailChainOp:
				failKind, failNth = seqChainOps[arg%3], int(arg>>2)%4
				log = append(log, fmt.Sprintf("chain op %s #%d due to fail", failKind, failNth))
			}
		}
	})
}

// fakeRules are chain c's rules as Rules of table.
func fakeRules(table string, c *fakeChain) []Rule {
	var out []Rule
	for _, r := range c.rules {
		out = append(out, Rule{Table: table, Chain: c.name, Spec: r.spec})
	}
	return out
}
