package iptables

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Dump is parsed iptables-save output, with or without -c. Its String is the
// same text in canonical form (no comments, one blank between tokens), which
// is also valid iptables-restore input (with -c when rules have Counters).
type Dump struct {
	Tables []*Table
}

// Table is one "*name" … "COMMIT" section of iptables-save output.
type Table struct {
	Name string
	// Chains are the ":NAME POLICY [packets:bytes]" declarations in order.
	// iptables-save declares every chain of the table, built-in or not.
	Chains []ChainDecl
	// Rules are the "-A" lines in order; each has Table set to Name.
	Rules []Rule
}

// ChainDecl declares a chain. Policy is "-" for a user-defined chain.
type ChainDecl struct {
	Name, Policy   string
	Packets, Bytes uint64
}

// Table returns the section for name, or nil.
func (d *Dump) Table(name string) *Table {
	for _, t := range d.Tables {
		if t.Name == name {
			return t
		}
	}
	return nil
}

func (d *Dump) String() string {
	var b strings.Builder
	for _, t := range d.Tables {
		b.WriteString(t.String())
	}
	return b.String()
}

func (t *Table) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", t.Name)
	for _, c := range t.Chains {
		fmt.Fprintf(&b, ":%s %s [%d:%d]\n", c.Name, c.Policy, c.Packets, c.Bytes)
	}
	for _, r := range t.Rules {
		if c := r.Counters; c != nil {
			fmt.Fprintf(&b, "[%d:%d] ", c.Packets, c.Bytes)
		}
		b.WriteString(r.String())
		b.WriteByte('\n')
	}
	b.WriteString("COMMIT\n")
	return b.String()
}

// chainRules returns the rules of chain, in order.
func (t *Table) chainRules(chain string) []Rule {
	var out []Rule
	for _, r := range t.Rules {
		if r.Chain == chain {
			out = append(out, r)
		}
	}
	return out
}

// chainNames lists every chain the table has: declared, or holding a rule.
func (t *Table) chainNames() []string {
	seen := map[string]bool{}
	var out []string
	add := func(n string) {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, c := range t.Chains {
		add(c.Name)
	}
	for _, r := range t.Rules {
		add(r.Chain)
	}
	return out
}

// without is t less chains: their declarations and their rules.
func (t *Table) without(chains []string) *Table {
	return &Table{
		Name:   t.Name,
		Chains: slices.DeleteFunc(slices.Clone(t.Chains), func(c ChainDecl) bool { return slices.Contains(chains, c.Name) }),
		Rules:  slices.DeleteFunc(slices.Clone(t.Rules), func(r Rule) bool { return slices.Contains(chains, r.Chain) }),
	}
}

// ParseSave parses iptables-save (or ip6tables-save) output. It is strict
// where leniency would be dangerous: a section without its COMMIT (output cut
// short), or a table iptables-save could not show (an IncompatibleTableError),
// is an error, not a table that looks empty, since the caller would then
// rewrite chains it could not see.
func ParseSave(data []byte) (*Dump, error) {
	return parseSave(data, nil)
}

// ParseSaveOf is ParseSave for the named tables only, as strict for them.
// The lines of any other table are passed over unread up to its COMMIT, and
// the table is left out of the Dump, so that what this parser does not
// understand in a table the caller never reads (one iptables-save of every
// loaded table also prints raw and security) is no error. The sections must
// still be whole: each committed, none inside another or twice.
func ParseSaveOf(data []byte, tables []string) (*Dump, error) {
	return parseSave(data, func(name string) bool { return slices.Contains(tables, name) })
}

// parseSave parses the tables keep says (all, if keep is nil).
func parseSave(data []byte, keep func(table string) bool) (*Dump, error) {
	p := &saveParser{d: &Dump{}, keep: keep}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), len(data)+1)
	for n := 1; sc.Scan(); n++ {
		line := strings.Trim(sc.Text(), " \t")
		if err := p.line(line); err != nil {
			if p.cur != nil {
				return nil, fmt.Errorf("line %d (table %s): %w", n, p.cur.Name, err)
			}
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if p.cur != nil {
		return nil, fmt.Errorf("table %s: no COMMIT (output cut short?)", p.cur.Name)
	}
	return p.d, nil
}

type saveParser struct {
	d    *Dump
	keep func(table string) bool
	// cur is the table being read; skip says its lines are passed over
	// (it is then not in d).
	cur  *Table
	skip bool
	// skipped are the tables passed over, to find one that appears twice.
	skipped []string
}

func (p *saveParser) line(line string) error {
	if p.skip && line != "" && line[0] != '*' && line != "COMMIT" {
		return nil
	}
	switch {
	case line == "" || line[0] == '#':
		if t, ok := strings.CutPrefix(line, "# Table `"); ok {
			if name, ok := strings.CutSuffix(t, "' is incompatible, use 'nft' tool."); ok && p.wanted(name) {
				return &IncompatibleTableError{Table: name, Line: line}
			}
		}
		return nil
	case line[0] == '*':
		if p.cur != nil {
			return fmt.Errorf("table %s starts before table %s is committed", line[1:], p.cur.Name)
		}
		// A table name cannot be quoted: one ending in a carriage return
		// ("*nat\r \n") would print as a CRLF line and read back without it.
		name := line[1:]
		if name == "" || strings.ContainsAny(name, " \t\r") {
			return fmt.Errorf("bad table name %q", name)
		}
		if p.d.Table(name) != nil || slices.Contains(p.skipped, name) {
			return fmt.Errorf("table %s appears twice", name)
		}
		p.cur, p.skip = &Table{Name: name}, !p.wanted(name)
		if p.skip {
			p.skipped = append(p.skipped, name)
		} else {
			p.d.Tables = append(p.d.Tables, p.cur)
		}
		return nil
	case p.cur == nil:
		return fmt.Errorf("%q outside a table", line)
	case line == "COMMIT":
		p.cur, p.skip = nil, false
		return nil
	case line[0] == ':':
		c, err := parseChainDecl(line[1:])
		if err != nil {
			return err
		}
		p.cur.Chains = append(p.cur.Chains, c)
		return nil
	}
	// iptables-save -c prints each rule's counters before it.
	var counters *Counters
	if line[0] == '[' {
		end := strings.IndexAny(line, " \t")
		if end < 0 {
			end = len(line)
		}
		c, err := parseCounters(line[:end])
		if err != nil {
			return fmt.Errorf("rule %q: %w", line, err)
		}
		counters, line = &c, strings.TrimLeft(line[end:], " \t")
	}
	toks, err := tokenize(line)
	if err != nil {
		return err
	}
	if len(toks) < 2 || toks[0] != "-A" || toks[1] == "" {
		return fmt.Errorf("want \"-A CHAIN …\", have %q", line)
	}
	p.cur.Rules = append(p.cur.Rules, Rule{Table: p.cur.Name, Chain: toks[1], Spec: toks[2:], Counters: counters})
	return nil
}

func (p *saveParser) wanted(table string) bool { return p.keep == nil || p.keep(table) }

// IncompatibleTableError is iptables-nft-save's answer, up to 1.8.9, for a
// table holding nftables rules that iptables cannot express (made with nft or
// by software using nftables directly): the comment
// "# Table `nat' is incompatible, use 'nft' tool." instead of the table, and
// exit status 0. (From 1.8.10 on it prints what it can of such a table, after
// a comment that it "contains incompatible base-chains": that one is only a
// comment.)
type IncompatibleTableError struct {
	Table string
	Line  string // the comment as printed
}

func (e *IncompatibleTableError) Error() string {
	return fmt.Sprintf("iptables cannot read table %s: it holds nftables rules not made with iptables (iptables-save printed only %q; see `nft list ruleset`)", e.Table, e.Line)
}

func parseChainDecl(s string) (ChainDecl, error) {
	f := fields(s)
	if len(f) != 3 {
		return ChainDecl{}, fmt.Errorf("want \":CHAIN POLICY [packets:bytes]\", have %q", ":"+s)
	}
	cnt, err := parseCounters(f[2])
	if err != nil {
		return ChainDecl{}, fmt.Errorf("chain %s: %w", f[0], err)
	}
	return ChainDecl{Name: f[0], Policy: f[1], Packets: cnt.Packets, Bytes: cnt.Bytes}, nil
}

// parseCounters parses "[packets:bytes]".
func parseCounters(s string) (Counters, error) {
	cnt, ok := strings.CutPrefix(s, "[")
	cnt, ok2 := strings.CutSuffix(cnt, "]")
	p, b, ok3 := strings.Cut(cnt, ":")
	if !ok || !ok2 || !ok3 {
		return Counters{}, fmt.Errorf("bad counters %q", s)
	}
	var c Counters
	var err1, err2 error
	c.Packets, err1 = strconv.ParseUint(p, 10, 64)
	c.Bytes, err2 = strconv.ParseUint(b, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Counters{}, fmt.Errorf("bad counters %q: %w", s, err)
	}
	return c, nil
}

// fields splits on blanks and tabs only, as iptables-restore does.
func fields(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' })
}

// tokenize splits a rule line as iptables-restore does: blanks and tabs
// separate tokens; a double quote opens a quoted part in which a backslash
// takes the next byte literally and the closing quote ends the token.
func tokenize(line string) ([]string, error) {
	var toks []string
	var cur []byte
	inQuote, escaped := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		if inQuote {
			switch {
			case escaped:
				cur, escaped = append(cur, c), false
			case c == '\\':
				escaped = true
			case c == '"':
				toks, cur, inQuote = append(toks, string(cur)), cur[:0], false
			default:
				cur = append(cur, c)
			}
			continue
		}
		switch c {
		case '"':
			inQuote = true
		case ' ', '\t':
			if len(cur) > 0 {
				toks, cur = append(toks, string(cur)), cur[:0]
			}
		default:
			cur = append(cur, c)
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote in %q", line)
	}
	if len(cur) > 0 {
		toks = append(toks, string(cur))
	}
	return toks, nil
}

// quote is the inverse of tokenize for one token: it leaves plain tokens as
// they are (so addresses print as iptables-save prints them) and quotes the
// rest, as iptables-save does for a comment with a blank in it.
func quote(s string) string {
	// A carriage return is quoted too: unquoted at the end of a line, a line
	// reader would take it for part of a CRLF.
	if s != "" && !strings.ContainsAny(s, " \t\"\r") {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
