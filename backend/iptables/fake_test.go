package iptables

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// fake is an in-memory kernel for one family. Restore interprets the
// iptables-restore --noflush commands a Manager writes (chain declarations,
// -A, -I, -D by rule or number, -X, COMMIT; -c packets bytes after the
// chain of -A and -I sets the rule's counters) with the kernel's checks that
// matter here: the target chain must exist, a deleted rule must be there, a
// deleted chain must be empty and unreferenced. A section applies whole or
// not at all.
type fake struct {
	tables map[string]*fakeTable
	saves  map[string]int // Save calls per table
	// restores are the inputs Restore accepted, in order.
	restores []string
	// saveErr and restoreErr, when set, are returned instead of doing the work.
	saveErr, restoreErr error
	// truncate cuts Save output short by that many bytes.
	truncate int
	// incompatible names a table that Save prints as iptables-nft-save up
	// to 1.8.9 does one holding native nftables rules: one comment line.
	incompatible string
	// legacy makes Save of a table the fake does not hold create it, as
	// legacy iptables-save -t does.
	legacy bool
	// dropCounters makes -c set nothing, as with ip6tables-nft 1.8.9.
	dropCounters bool
	// zeroed, when set and true for a Save (its table, the Save calls of
	// that table so far in saves), makes that Save print every rule's
	// counters as zero, as legacy iptables-save does between another
	// program's replace of the table and its adding of the old counters
	// back.
	zeroed func(table string) bool
	// chainErr, when set, is asked before each chain operation of a
	// Restore (not of a test's own apply): "new" (a declaration of a chain
	// not there), "flush" (one of a chain there) or "delete" (-X), with
	// the table and chain. An error it returns fails that Restore, which
	// then changes nothing, as iptables-restore fails the whole
	// transaction when the kernel refuses a chain's creation, flush or
	// deletion.
	chainErr func(op, table, chain string) error
}

var _ runner = (*fake)(nil)

type fakeTable struct {
	chains []*fakeChain // in declaration order, built-ins first
}

type fakeChain struct {
	name, policy string
	rules        []fakeRule
}

// fakeRule is a rule's spec, as Rule's, and its counters, which only a
// restore's -c sets: the fake sees no traffic.
type fakeRule struct {
	spec     []string
	counters Counters
}

var builtinChains = map[string][]string{
	"filter": {"INPUT", "FORWARD", "OUTPUT"},
	"mangle": {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"},
	"nat":    {"PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"},
}

// startTables are the tables a new fake holds; the others (mangle) appear
// with the first restore into them, as nf_tables makes a table only when
// something is written to it, and until then read as no output at all.
var startTables = []string{"filter", "nat"}

// builtinTargets are the targets that are not chains.
var builtinTargets = []string{"ACCEPT", "DROP", "RETURN", "REJECT", "MASQUERADE", "SNAT", "DNAT", "MARK", "LOG"}

func newFake() *fake {
	f := &fake{tables: map[string]*fakeTable{}, saves: map[string]int{}}
	for _, t := range startTables {
		f.tables[t] = newFakeTable(t)
	}
	return f
}

func newFakeTable(name string) *fakeTable {
	t := &fakeTable{}
	for _, c := range builtinChains[name] {
		t.chains = append(t.chains, &fakeChain{name: c, policy: "ACCEPT"})
	}
	return t
}

func (t *fakeTable) chain(name string) *fakeChain {
	for _, c := range t.chains {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (t *fakeTable) clone() *fakeTable {
	n := &fakeTable{}
	for _, c := range t.chains {
		cc := &fakeChain{name: c.name, policy: c.policy}
		for _, r := range c.rules {
			cc.rules = append(cc.rules, fakeRule{slices.Clone(r.spec), r.counters})
		}
		n.chains = append(n.chains, cc)
	}
	return n
}

// read is t as a Save sees it: a copy with every rule's counters zero if
// zeroed, else t.
func (t *fakeTable) read(zeroed bool) *fakeTable {
	if !zeroed {
		return t
	}
	z := t.clone()
	for _, c := range z.chains {
		for i := range c.rules {
			c.rules[i].counters = Counters{}
		}
	}
	return z
}

// text is the table as iptables-save prints it, with -c if counters.
func (t *fakeTable) text(name string, counters bool) string {
	tt := &Table{Name: name}
	for _, c := range t.chains {
		tt.Chains = append(tt.Chains, ChainDecl{Name: c.name, Policy: c.policy})
	}
	for _, c := range t.chains {
		for _, r := range c.rules {
			rule := Rule{Table: name, Chain: c.name, Spec: r.spec}
			if counters {
				rule.Counters = &r.counters
			}
			tt.Rules = append(tt.Rules, rule)
		}
	}
	return tt.String()
}

func (f *fake) Save(table string) ([]byte, error) {
	f.saves[table]++
	if f.saveErr != nil {
		return nil, f.saveErr
	}
	zeroed := f.zeroed != nil && f.zeroed(table)
	if table == "" {
		var out strings.Builder
		for _, name := range slices.Sorted(maps.Keys(f.tables)) {
			out.WriteString(f.tables[name].read(zeroed).text(name, true))
		}
		return []byte(out.String()), nil
	}
	if table == f.incompatible {
		return []byte("# Table `" + table + "' is incompatible, use 'nft' tool.\n"), nil
	}
	t, ok := f.tables[table]
	switch {
	case !ok && !f.legacy:
		return nil, nil
	case !ok:
		t = newFakeTable(table)
		f.tables[table] = t
	}
	out := "# Generated by fake\n" + t.read(zeroed).text(table, true) + "# Completed\n"
	return []byte(out[:len(out)-min(f.truncate, len(out))]), nil
}

func (f *fake) Restore(table string, data []byte) error {
	if f.restoreErr != nil {
		return f.restoreErr
	}
	if err := f.applyChecked(table, string(data), f.chainErr); err != nil {
		return err
	}
	f.restores = append(f.restores, string(data))
	return nil
}

// apply interprets one restore section for table; tests also use it to
// tamper with the fake as an operator would.
func (f *fake) apply(table, data string) error {
	return f.applyChecked(table, data, nil)
}

// applyChecked is apply with chainErr (nil: none) asked before each chain
// operation.
func (f *fake) applyChecked(table, data string, chainErr func(op, table, chain string) error) error {
	chainOp := func(op, chain string) error {
		if chainErr == nil {
			return nil
		}
		return chainErr(op, table, chain)
	}
	var work *fakeTable
	for n, line := range strings.Split(strings.TrimSuffix(data, "\n"), "\n") {
		err := func() error {
			switch {
			case line == "" || line[0] == '#':
				return nil
			case line[0] == '*':
				if line[1:] != table {
					return fmt.Errorf("section %s, want %s", line[1:], table)
				}
				if t, ok := f.tables[table]; ok {
					work = t.clone()
				} else {
					work = newFakeTable(table)
				}
				return nil
			case work == nil:
				return errors.New("outside a section")
			case line == "COMMIT":
				f.tables[table], work = work, nil
				return nil
			case line[0] == ':':
				fl := fields(line[1:])
				if len(fl) != 3 {
					return fmt.Errorf("bad declaration")
				}
				op := "new"
				if work.chain(fl[0]) != nil {
					op = "flush"
				}
				if err := chainOp(op, fl[0]); err != nil {
					return err
				}
				if c := work.chain(fl[0]); c != nil {
					c.rules = nil
					if fl[1] != "-" {
						c.policy = fl[1]
					}
				} else {
					work.chains = append(work.chains, &fakeChain{name: fl[0], policy: "-"})
				}
				return nil
			}
			// "[packets:bytes] -A …", as restore -c reads it, is
			// "-A chain -c packets bytes …".
			var counters []string
			if line[0] == '[' {
				cnt, rest, _ := strings.Cut(line, " ")
				c, err := parseCounters(cnt)
				if err != nil {
					return err
				}
				counters = []string{"-c", strconv.FormatUint(c.Packets, 10), strconv.FormatUint(c.Bytes, 10)}
				line = rest
			}
			toks, err := tokenize(line)
			if err != nil {
				return err
			}
			if len(toks) < 2 {
				return errors.New("no chain")
			}
			if toks[0] == "-X" {
				if err := chainOp("delete", toks[1]); err != nil {
					return err
				}
			}
			return work.command(toks[0], toks[1], append(counters, toks[2:]...), f.dropCounters)
		}()
		if err != nil {
			return fmt.Errorf("fake restore line %d %q: %w", n+1, line, err)
		}
	}
	if work != nil {
		return errors.New("fake restore: no COMMIT")
	}
	return nil
}

func (t *fakeTable) command(cmd, chain string, args []string, dropCounters bool) error {
	c := t.chain(chain)
	if c == nil {
		return fmt.Errorf("no chain %s", chain)
	}
	// counted takes -c packets bytes off the front of args.
	counted := func(args []string) (fakeRule, error) {
		if len(args) < 3 || args[0] != "-c" {
			return fakeRule{spec: args}, nil
		}
		p, err1 := strconv.ParseUint(args[1], 10, 64)
		b, err2 := strconv.ParseUint(args[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			return fakeRule{}, err
		}
		if dropCounters {
			return fakeRule{spec: args[3:]}, nil
		}
		return fakeRule{spec: args[3:], counters: Counters{p, b}}, nil
	}
	checkTarget := func(spec []string) error {
		tg := Rule{Spec: spec}.target()
		if tg != "" && t.chain(tg) == nil && !slices.Contains(builtinTargets, tg) {
			return fmt.Errorf("no chain/target by that name: %s", tg)
		}
		return nil
	}
	switch cmd {
	case "-A":
		r, err := counted(args)
		if err != nil {
			return err
		}
		if err := checkTarget(r.spec); err != nil {
			return err
		}
		c.rules = append(c.rules, r)
	case "-I":
		pos := 1
		if len(args) > 0 {
			if n, err := strconv.Atoi(args[0]); err == nil {
				pos, args = n, args[1:]
			}
		}
		if pos < 1 || pos > len(c.rules)+1 {
			return fmt.Errorf("index %d out of range", pos)
		}
		r, err := counted(args)
		if err != nil {
			return err
		}
		if err := checkTarget(r.spec); err != nil {
			return err
		}
		c.rules = slices.Insert(c.rules, pos-1, r)
	case "-D":
		if len(args) == 1 {
			if n, err := strconv.Atoi(args[0]); err == nil {
				if n < 1 || n > len(c.rules) {
					return fmt.Errorf("index %d out of range", n)
				}
				c.rules = slices.Delete(c.rules, n-1, n)
				return nil
			}
		}
		i := slices.IndexFunc(c.rules, func(r fakeRule) bool { return slices.Equal(r.spec, args) })
		if i < 0 {
			return errors.New("bad rule (does a matching rule exist in that chain?)")
		}
		c.rules = slices.Delete(c.rules, i, i+1)
	case "-X":
		if c.policy != "-" {
			return errors.New("cannot delete a built-in chain")
		}
		if len(c.rules) > 0 {
			return errors.New("chain not empty")
		}
		for _, o := range t.chains {
			for _, r := range o.rules {
				if (Rule{Spec: r.spec}).target() == chain {
					return fmt.Errorf("chain referenced from %s", o.name)
				}
			}
		}
		t.chains = slices.DeleteFunc(t.chains, func(x *fakeChain) bool { return x == c })
	default:
		return fmt.Errorf("unsupported command %s", cmd)
	}
	return nil
}

// String is the fake's tables as iptables-save would print them, sorted.
func (f *fake) String() string {
	var names []string
	for n := range f.tables {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(f.tables[n].text(n, false))
	}
	return b.String()
}

// reload is `iptables-save -t table > f; iptables-restore < f` (a
// firewall's reload of a set saved with our rules): the table flushed and
// written again as it was, every rule's counters zero.
func (f *fake) reload(t *testing.T, table string) {
	t.Helper()
	if err := f.apply(table, f.tables[table].text(table, false)); err != nil {
		t.Fatal(err)
	}
}

// traffic counts a packet of n bytes on every rule of table.
func (f *fake) traffic(table string, n uint64) {
	for _, c := range f.tables[table].chains {
		for i := range c.rules {
			c.rules[i].counters.Packets++
			c.rules[i].counters.Bytes += n
		}
	}
}

// must applies an operator's change, failing the test if it does not apply.
func (f *fake) must(t *testing.T, table string, lines ...string) {
	t.Helper()
	data := "*" + table + "\n" + strings.Join(lines, "\n") + "\nCOMMIT\n"
	if err := f.apply(table, data); err != nil {
		t.Fatal(err)
	}
}
