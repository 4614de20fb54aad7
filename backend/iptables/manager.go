package iptables

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"time"

	"k8s.io/klog/v2"
)

// runner reads and writes one family's tables. It is what a Manager needs
// from iptables and nothing more; execRunner runs the real binaries, fake
// (in the tests) keeps tables in memory.
type runner interface {
	// Save returns `iptables-save -c -t table` output: rules with their
	// counters (see stampBytes). A table the kernel does not hold yet may
	// read as no output at all; legacy iptables creates it. Table "" is
	// `iptables-save -c` alone: every table the kernel holds, and none
	// created.
	Save(table string) ([]byte, error)
	// Restore feeds data, one "*table … COMMIT" section, to
	// `iptables-restore --noflush`: one transaction that applies whole or
	// not at all, leaving chains data does not name as they are.
	Restore(table string, data []byte) error
}

// Our rules in the tables of stampTables are written with their byte
// counter set to stampBytes (`-c 0 stampBytes`), so that a check tells them
// from the same rules written by another program: a restore of a saved set
// that holds ours (firewall-cmd --reload, netfilter-persistent reload,
// iptables-restore < saved) flushes the table and writes them again with the
// counters of its input, zero unless it was saved and is restored with -c.
// Traffic only adds to a counter, and 2^40 bytes of connections' first
// packets (all that nat counts) within one check's interval is beyond any
// host, so a rule of ours with fewer bytes, or with fewer than it had at the
// last check, was written by someone else. plan writes it again, stamped, as
// it would a missing one, and Gap("nat") tells the caller that traffic may
// have left unNATed in the gap before. A restore that sets counters (-c, or
// `nft -f` of a `nft list ruleset`) is noticed only if our rules counted
// traffic between its save and our last check: the jump from POSTROUTING
// counts every connection leaving the host. `iptables -Z` (counters zeroed)
// reads as a restore (with both backends iptables-save -c prints the same
// after either), and so do, at a Manager's first check, the rules an agentd
// before the stamp wrote: their counters are the traffic's only, as are
// those of rules a restore put back while no agentd ran. Each time, our
// rules are written again, stamped, and Reconcile reports Restamped (or,
// where this iptables cannot stamp them, CountersWentBack: the rules are
// left as they are, since written again they would be the same), logged at
// V(2) only: whether a flush let flows leave unNATed is for the caller to
// read in conntrack (see DeleteUnmasqueraded and Gap), where a reload's gap
// leaves its trace and `iptables -Z` none. The log says they were not stamped, at
// a first check, rather than that their counters went back. In
// filter and mangle nothing outlives the gap (what they dropped is gone), so
// their counters are not watched.
const stampBytes = 1 << 40

var stampTables = map[string]bool{"nat": true}

// managedTables are read on every Reconcile, whatever the desired rules, so
// that chains of ours no longer wanted there (forward rules or the Docker
// mark switched off) are found and deleted; with legacy iptables, only those
// the kernel has loaded (see Reconcile).
var managedTables = []string{"filter", "mangle", "nat"}

// Options configure New. The zero value is the host's iptables.
type Options struct {
	// CommandPrefix is run in front of iptables-save and iptables-restore,
	// e.g. {"ip", "netns", "exec", "ns1"} to work inside a network namespace.
	CommandPrefix []string
	// Timeout bounds each command, including its wait for the xtables lock.
	// Zero means one minute.
	Timeout time.Duration
	// Mode picks the iptables backend: ModeDefault, ModeNFT, ModeLegacy or
	// ModeAuto.
	Mode string
	// Context, if set, ends every command still running once it is done,
	// so that a stop need not wait for an iptables-restore waiting for the
	// xtables lock (Timeout long). Each restore is one transaction: an
	// ended one applied all of its input or none.
	Context context.Context
}

// The iptables backends Options.Mode can ask for.
const (
	// ModeDefault uses the backend of the `iptables` command in PATH: on a
	// host, the one its alternatives select, which the host's other
	// iptables users (dockerd, kube-proxy) use too.
	ModeDefault = ""
	ModeNFT     = "nft"
	ModeLegacy  = "legacy"
	// ModeAuto uses the backend the host's other iptables users write to
	// (see chooseMode), for a container image that carries both: its own
	// `iptables` need not be the host's.
	ModeAuto = "auto"
)

// Modes are the valid values of Options.Mode.
var Modes = []string{ModeDefault, ModeNFT, ModeLegacy, ModeAuto}

// Manager owns agentd's chains (ChainPrefix) in one family's filter, mangle
// and nat tables, and the jumps into them. It is not safe for concurrent use:
// one goroutine (the backend's owner) calls it, and there must be one Manager
// per family on a host, since each deletes our chains the other does not want.
type Manager struct {
	family      Family
	run         runner
	randomFully bool
	// legacy: run's iptables-save -t creates a table the kernel has not
	// loaded, whose hooks then see every packet (nf_tables creates none).
	legacy bool
	log    klog.Logger
	// opts are New's, for the Manager of the other backend
	// (RemoveFromOtherBackend); nil in one newManager made alone.
	opts *Options
	// found are, per table, the chains of jumpIfChain the last Reconcile
	// read there and left as desired: one not among them is new, unless
	// it is among lost.
	found map[string][]string
	// lost are, per table, chains of jumpIfChain that held our jump when a
	// Reconcile left them and were gone at a later one (a reload of rules
	// saved without them): their return is our jump to put back, not a
	// chain new since.
	lost map[string][]string
	// wrote are the tables the last Reconcile wrote to (see Wrote);
	// wentBack those where it found our rules as desired but with their
	// counters gone back, and left them (CountersWentBack; see Gap).
	wrote, wentBack []string
	// noStamp: our rules are written and checked without the stamp
	// (stampBytes), which this iptables was seen not to set (checkStamp).
	noStamp bool
	// seen are, per table of stampTables, the bytes each rule of ours
	// (by its String) had at the last read; none right after a write.
	seen map[string]map[string]uint64
}

// A Change is what Reconcile did. They are ordered: a Reconcile of several
// tables reports the greatest of its tables'.
type Change int

const (
	// Unchanged: our chains and jumps were as desired.
	Unchanged Change = iota
	// Restamped: our chains and jumps were as desired but for counters
	// that went back (see stampBytes), and are written again, stamped.
	// A restore of saved rules, whose flush may have let flows leave
	// unNATed, and `iptables -Z` (counters zeroed, nothing else) look
	// the same here; only what the flush left behind (conntrack entries
	// without NAT) tells them apart, which is the caller's to read.
	Restamped
	// CountersWentBack: as Restamped, but this iptables does not set a
	// rule's counters (the stamp was given up, see checkStamp): our
	// rules, as desired but with fewer bytes than at the last check, are
	// left in place, since written again without the stamp they would be
	// the same, and their bytes now are what the next check compares
	// with. Nothing is written (Wrote is false); Gap tells the caller.
	CountersWentBack
	// NewChainJumps: only our jumps into chains of other software that
	// the Manager's previous Reconcile did not find, and that never held
	// our jump, were put in place: their owner made them since
	// (DOCKER-USER, by a dockerd started after us). Nothing of ours was
	// missing or altered. A chain that held our jump and was deleted with
	// it, then made again, is Rewritten, whether or not a Reconcile ran
	// while it was gone.
	NewChainJumps
	// Rewritten: chains or jumps of ours were not as desired (their first
	// installation, desired changed, or another program altered them),
	// and now are.
	Rewritten
)

func (c Change) String() string {
	switch c {
	case Unchanged:
		return "unchanged"
	case Restamped:
		return "restamped"
	case CountersWentBack:
		return "counters went back, left unstamped"
	case NewChainJumps:
		return "jumps into new chains"
	case Rewritten:
		return "rewritten"
	}
	return fmt.Sprintf("Change(%d)", int(c))
}

// New finds the family's iptables binaries (see findTools) and returns a
// Manager that runs them and logs to log: V(0) each rewrite of a table and
// why (V(2) when only our rules' counters went back: Restamped, or
// CountersWentBack without the stamp, which writes nothing), V(2) the
// binaries found, V(4) each iptables-restore input. New itself
// runs only `--version` commands, and with Mode auto each backend's
// iptables-save (detectMode), which opts.Context ends: New then returns its
// error.
func New(family Family, log klog.Logger, opts Options) (*Manager, error) {
	if opts.Timeout == 0 {
		opts.Timeout = time.Minute
	}
	mode := opts.Mode
	if mode == ModeAuto {
		var why string
		var err error
		if mode, why, err = detectMode(opts.Context, family, opts.CommandPrefix, opts.Timeout); err != nil {
			return nil, err
		}
		log.Info("iptables backend chosen", "family", family, "mode", cmp.Or(mode, "the iptables command's"), "why", why)
	}
	t, err := findTools(family, mode)
	if err != nil {
		return nil, err
	}
	log.V(2).Info("iptables found", "family", family, "iptables", t.iptables, "version", t.version,
		"mode", t.mode, "save", t.save, "restore", t.restore, "randomFully", t.randomFully, "restoreWait", t.restoreWait)
	return newExecManager(family, t, opts, log), nil
}

func newExecManager(family Family, t tools, opts Options, log klog.Logger) *Manager {
	r := &execRunner{prefix: slices.Clone(opts.CommandPrefix), save: t.save, restore: t.restore,
		restoreWait: t.restoreWait, timeout: opts.Timeout, ctx: opts.Context}
	m := newManager(family, r, t.randomFully, t.mode == "legacy", log)
	m.opts = &opts
	return m
}

func newManager(family Family, r runner, randomFully, legacy bool, log klog.Logger) *Manager {
	return &Manager{family: family, run: r, randomFully: randomFully, legacy: legacy, log: log,
		found: map[string][]string{}, lost: map[string][]string{}, seen: map[string]map[string]uint64{}}
}

// RandomFully reports whether this iptables can masquerade with
// --random-fully; pass it to MasqRules.
func (m *Manager) RandomFully() bool { return m.randomFully }

// Reconcile makes our chains and the jumps into them hold exactly desired:
// desired is the whole truth for this family, so chains of ours it does not
// mention are deleted. Rules outside our chains, other than jumps into them,
// are never touched.
//
// It reads each table once and, only when it differs, rewrites it in one
// iptables-restore transaction: our chains are declared afresh (which
// flushes them inside the transaction) and refilled, stray or misplaced
// jumps are deleted and the wanted ones put in place. It reports what it
// changed (see Change); on error it has applied what it could, table by
// table, and Wrote tells which tables those are.
func (m *Manager) Reconcile(desired []Rule) (change Change, err error) {
	m.wrote, m.wentBack = nil, nil
	if err := validate(desired); err != nil {
		return Unchanged, err
	}
	tables := slices.Clone(managedTables)
	for _, r := range desired {
		if !slices.Contains(tables, r.Table) {
			tables = append(tables, r.Table)
		}
	}
	slices.Sort(tables)
	// Legacy: one `iptables-save` of the tables the kernel holds, rather
	// than one -t per table, which would load mangle and nat into every
	// host however unused. A table not loaded holds no chain of ours; it
	// reads as empty, and is loaded only to write the rules wanted there.
	// Only the tables read here are parsed: what the parser does not
	// understand in another (raw, security) is none of ours.
	var loaded *Dump
	if m.legacy {
		out, err := m.run.Save("")
		if err != nil {
			return Unchanged, fmt.Errorf("%s: read tables: %w", m.family, err)
		}
		if loaded, err = ParseSaveOf(out, tables); err != nil {
			return Unchanged, fmt.Errorf("%s: parse iptables-save: %w", m.family, err)
		}
	}
	var errs []error
	for _, t := range tables {
		var want []Rule
		for _, r := range desired {
			if r.Table == t {
				want = append(want, r)
			}
		}
		c, err := m.reconcileTable(t, want, loaded)
		change = max(change, c)
		switch c {
		case Unchanged:
		case CountersWentBack:
			m.wentBack = append(m.wentBack, t)
		default:
			m.wrote = append(m.wrote, t)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return change, errors.Join(errs...)
}

// Wrote reports whether the last Reconcile wrote table: our chains or jumps
// there were not as desired, and its iptables-restore put them right. Other
// tables may have failed. For nat with MasqRules desired this is the rules'
// first installation by this Manager, their change, or their repair after
// another program removed, altered or replaced them (a restore of saved
// rules, see stampBytes): traffic may have left unNATed just before (see
// DeleteUnmasqueraded).
func (m *Manager) Wrote(table string) bool { return slices.Contains(m.wrote, table) }

// Gap reports whether traffic may have met table without our rules as
// desired just before the last Reconcile: it wrote them there (Wrote), or
// found them put back by another program's restore (their counters went
// back) and left them, having nothing to write (CountersWentBack). For nat
// with MasqRules desired, flows may have left unNATed then (see
// DeleteUnmasqueraded).
func (m *Manager) Gap(table string) bool {
	return m.Wrote(table) || slices.Contains(m.wentBack, table)
}

// Remove deletes our chains and the jumps into them from every table it
// manages (--ip-masq off, shutting down for good). Nothing there is success.
func (m *Manager) Remove() error {
	_, err := m.Reconcile(nil)
	return err
}

// RemoveFromOtherBackend deletes our chains and the jumps into them from the
// tables of the iptables backend m does not write to (nf_tables when m's is
// legacy, and the reverse), where a run with another --iptables-mode, or
// before the host's `iptables` changed backend, left them. The kernel runs
// both backends' chains, so such leftovers would go on masquerading and
// accepting as that run's flags said, whatever this run's are, and nothing
// else removes them. The other backend is read as a Manager of its own
// reads it (legacy: no table loaded) and written only where something of
// ours is. Without that backend's binaries (iptables before 1.8 has one
// backend) there is nothing to do; a failure to read or write it is an
// error. A Manager New did not make has no other backend.
func (m *Manager) RemoveFromOtherBackend() error {
	_, err := m.removeFromOther()
	return err
}

// RemoveEverywhere is Remove and RemoveFromOtherBackend (agentd
// --release-lease: no agent runs here any more, whatever mode the last one
// had). It returns the tables it deleted something of ours from, each
// followed by its backend in parentheses ("nat (nf_tables)"), so that the
// caller can say what went. A failure in one backend does not keep it
// from the other: it returns the tables written in both, and every
// failure.
func (m *Manager) RemoveEverywhere() (removed []string, err error) {
	err = m.Remove()
	removed = m.wroteIn()
	other, otherErr := m.removeFromOther()
	return append(removed, other...), errors.Join(err, otherErr)
}

// removeFromOther is RemoveFromOtherBackend, returning the tables written
// as RemoveEverywhere does.
func (m *Manager) removeFromOther() ([]string, error) {
	if m.opts == nil {
		return nil, nil
	}
	other := ModeLegacy
	if m.legacy {
		other = ModeNFT
	}
	if _, err := exec.LookPath(baseName(m.family) + "-" + other); err != nil {
		return nil, nil
	}
	t, err := findTools(m.family, other)
	if err != nil {
		return nil, fmt.Errorf("%s: the %s backend: %w", m.family, other, err)
	}
	o := newExecManager(m.family, t, *m.opts, m.log.WithValues("backend", t.mode))
	if err := o.Remove(); err != nil {
		return nil, fmt.Errorf("the %s backend: %w", other, err)
	}
	return o.wroteIn(), nil
}

// wroteIn is what the last Reconcile wrote (Wrote), each table followed by
// m's backend.
func (m *Manager) wroteIn() []string {
	backend := "nf_tables"
	if m.legacy {
		backend = "legacy"
	}
	var tables []string
	for _, t := range m.wrote {
		tables = append(tables, t+" ("+backend+")")
	}
	return tables
}

// reconcileTable puts table right, as read in loaded (the legacy tables
// Reconcile read) or, when that is nil, by its own iptables-save -t.
func (m *Manager) reconcileTable(table string, want []Rule, loaded *Dump) (Change, error) {
	if loaded != nil {
		return m.apply(table, loaded.Table(table), want)
	}
	out, err := m.run.Save(table)
	if err != nil {
		return Unchanged, fmt.Errorf("%s: read table %s: %w", m.family, table, err)
	}
	d, err := ParseSave(out)
	if inc := (*IncompatibleTableError)(nil); errors.As(err, &inc) {
		// Nothing of ours is wanted there (mangle without the Docker
		// mark, nat without masquerade): leave it, as failing here would
		// keep the agent unready for a table it has no use for. A chain
		// of ours left in it by an earlier run cannot be seen, and stays.
		if len(want) == 0 {
			return Unchanged, nil
		}
		// Read as empty, the table would get another jump each pass.
		return Unchanged, fmt.Errorf("%s: %w; nothing written to it", m.family, inc)
	}
	if err != nil {
		return Unchanged, fmt.Errorf("%s: parse iptables-save -t %s: %w", m.family, table, err)
	}
	return m.apply(table, d.Table(table), want)
}

// apply writes what plan says makes table, as read in have (nil: not
// there), hold want, if anything.
func (m *Manager) apply(table string, have *Table, want []Rule) (Change, error) {
	if have == nil {
		have = &Table{Name: table}
	}
	watched := stampTables[table]
	stamp := watched && !m.noStamp
	data, why := plan(have, want, stamp, m.seen[table])
	countersOnly := false
	if data != nil && watched {
		if plain, _ := plan(have, want, false, nil); plain == nil {
			// Only counters call for the write: read again before
			// taking that for a reload (see read).
			if again := m.read(table); again != nil {
				have = again
				data, why = plan(have, want, stamp, m.seen[table])
			}
			plain, _ = plan(have, want, false, nil)
			countersOnly = data != nil && plain == nil
		}
	}
	var found, fresh []string
	for _, c := range have.chainNames() {
		if jumpIfChain[[2]string{table, c}] {
			found = append(found, c)
			if !slices.Contains(m.found[table], c) && !slices.Contains(m.lost[table], c) {
				fresh = append(fresh, c)
			}
		}
	}
	if data == nil {
		if watched {
			m.seen[table] = ourBytes(have)
		}
		m.record(table, found, want)
		return Unchanged, nil
	}
	if countersOnly && !stamp {
		// Written again without the stamp, the rules would read the
		// same, the counters aside: their bytes now are the floor of
		// the next check. Only the conntrack read after a flush is due,
		// which Gap tells the caller.
		m.log.V(2).Info("iptables rules left in place, their counters gone back (this iptables does not set a rule's counters)", "family", m.family, "table", table, "why", why)
		m.seen[table] = ourBytes(have)
		m.record(table, found, want)
		return CountersWentBack, nil
	}
	change := Rewritten
	if countersOnly {
		change = Restamped
	}
	if len(fresh) > 0 && !countersOnly {
		// Read without the new chains, the table is as desired: only
		// they want our jumps.
		if rest, _ := plan(have.without(fresh), want, stamp, m.seen[table]); rest == nil {
			change = NewChainJumps
			why = append(why, strings.Join(fresh, ", ")+" new since the last check")
		}
	}
	m.log.V(4).Info("iptables-restore", "family", m.family, "table", table, "input", string(data))
	if err := m.run.Restore(table, data); err != nil {
		// found stays: a chain new now is new at the next try.
		return Unchanged, fmt.Errorf("%s: write table %s (%s): %w", m.family, table, strings.Join(why, "; "), err)
	}
	switch change {
	case Restamped:
		// Nothing of ours was missing or altered: the caller says so
		// if the conntrack table shows a gap.
		m.log.V(2).Info("iptables rules stamped again", "family", m.family, "table", table, "why", why)
	default:
		m.log.Info("iptables chains rewritten", "family", m.family, "table", table, "why", why)
	}
	m.record(table, found, want)
	// What we wrote starts afresh.
	delete(m.seen, table)
	if stamp && len(want) > 0 {
		m.checkStamp(table)
	}
	return change, nil
}

// ourBytes are the bytes of each rule of ours in t read with counters, by
// the rule's String.
func ourBytes(t *Table) map[string]uint64 {
	seen := map[string]uint64{}
	for _, r := range t.Rules {
		if (Owned(r.Chain) || Owned(r.target())) && r.Counters != nil {
			seen[r.String()] = r.Counters.Bytes
		}
	}
	return seen
}

// checkStamp reads table back right after a write of our rules stamped
// (stampBytes) and gives the stamp up for this Manager if they do not carry
// it: this iptables cannot set a rule's counters (ip6tables-nft 1.8.9 drops
// them), and without that every check would take our own rules for another
// program's and write them again. Without the stamp, a restore is still
// noticed when our rules' counters go back (see stampBytes). It costs one
// iptables-save per write, not per check. A failed read decides nothing:
// the next write reads again.
//
// A read back that finds a rule unstamped is read once more before the stamp
// is given up: it may have come in the moment when legacy iptables reads
// zero counters (see read).
func (m *Manager) checkStamp(table string) {
	unstamped := func(t *Table) (Rule, bool) {
		i := slices.IndexFunc(t.Rules, func(r Rule) bool {
			return (Owned(r.Chain) || Owned(r.target())) && (r.Counters == nil || r.Counters.Bytes < stampBytes)
		})
		if i < 0 {
			return Rule{}, false
		}
		return t.Rules[i], true
	}
	t := m.read(table)
	if t == nil {
		return
	}
	if _, ok := unstamped(t); ok {
		if t = m.read(table); t == nil {
			return
		}
	}
	m.seen[table] = ourBytes(t)
	if r, ok := unstamped(t); ok {
		m.noStamp = true
		m.log.Info("this iptables does not set a rule's counters: a restore of saved rules holding ours (a firewall's reload) is noticed only if our rules counted traffic before it",
			"family", m.family, "table", table, "rule", r.String())
	}
}

// read returns table as iptables-save reads it now, nil if that fails.
//
// apply and checkStamp read again with it before they take a read in which
// our rules' counters went back for another program's restore: legacy
// iptables-save reads every rule's counters as zero for a moment while
// another program writes the table. libiptc replaces the whole table, whose
// new rules the kernel starts at zero, and adds the old counters back in a
// second call; kube-proxy's restore of its own chains and dockerd's
// commands do that to nat, and iptables-save takes no lock that keeps it
// out of that moment. A restore's zeros are there in the second read too;
// that moment twice in a row would take a writer busy with nat without a
// pause.
func (m *Manager) read(table string) *Table {
	out, err := m.run.Save(table)
	if err != nil {
		return nil
	}
	d, err := ParseSave(out)
	if err != nil {
		return nil
	}
	return d.Table(table)
}

// record keeps what apply left in table: found, the chains of jumpIfChain
// there now, which hold our jump where want has one. A chain found before
// that is gone now lost our jump with it if want has one from it; a lost
// chain found again is no longer lost.
func (m *Manager) record(table string, found []string, want []Rule) {
	lost := slices.DeleteFunc(slices.Clone(m.lost[table]), func(c string) bool { return slices.Contains(found, c) })
	for _, c := range m.found[table] {
		jumped := slices.ContainsFunc(want, func(r Rule) bool { return r.Chain == c })
		if jumped && !slices.Contains(found, c) && !slices.Contains(lost, c) {
			lost = append(lost, c)
		}
	}
	m.found[table], m.lost[table] = found, lost
}

// plan compares our part of table have with want (rules of that table only)
// and returns the iptables-restore input that makes them equal, with why in
// words, or nil when they are equal already.
//
// Ours are the chains named with ChainPrefix, and jumps into them from any
// other chain. The chains must hold want's rules in order; each wanted jump
// must exist exactly once, first in its chain where jumpFirst says so, ahead
// of any unconditional RETURN where jumpIfChain does (and only if that chain
// exists); no other jump into our chains may exist. Only the calling chains
// whose jumps are not so are rewritten. With stamp, each rule written gets
// stampBytes, and a rule of ours read with fewer is not so; nor is one read
// with fewer than seen says it had (see stampBytes).
func plan(have *Table, want []Rule, stamp bool, seen map[string]uint64) (data []byte, why []string) {
	table := have.Name
	// restored reports whether one of rules has counters that went back.
	restored := func(rules []Rule) bool {
		return slices.ContainsFunc(rules, func(r Rule) bool {
			floor := seen[r.String()]
			if stamp {
				floor = max(floor, stampBytes)
			}
			return r.Counters != nil && r.Counters.Bytes < floor
		})
	}
	// A Manager's first read of the table (seen nil) finds rules an agentd
	// before the stamp wrote, unstamped, as it finds rules a restore put
	// back while no agentd ran: counters alone cannot tell them apart.
	rulesWhy, jumpWhy := "restored by another program (their counters went back)", "restored by another program (its counters went back)"
	if seen == nil {
		rulesWhy = "not stamped (written by an agentd before the stamp, or restored by another program while none ran)"
		jumpWhy = rulesWhy
	}

	var wantChains []string
	addChain := func(c string) {
		if !slices.Contains(wantChains, c) {
			wantChains = append(wantChains, c)
		}
	}
	wantRules := map[string][]Rule{}
	var wantJumps []Rule
	for _, r := range want {
		if Owned(r.Chain) {
			addChain(r.Chain)
			wantRules[r.Chain] = append(wantRules[r.Chain], r)
		} else {
			wantJumps = append(wantJumps, r)
		}
		if t := r.target(); Owned(t) {
			addChain(t)
		}
	}

	// Chains of other software that we never create get our jumps only
	// while they exist.
	allChains := have.chainNames()
	wantJumps = slices.DeleteFunc(wantJumps, func(r Rule) bool {
		return jumpIfChain[[2]string{table, r.Chain}] && !slices.Contains(allChains, r.Chain)
	})

	var haveChains, stale []string
	for _, c := range allChains {
		if Owned(c) {
			haveChains = append(haveChains, c)
			if !slices.Contains(wantChains, c) {
				stale = append(stale, c)
			}
		}
	}
	var haveJumps []Rule
	for _, r := range have.Rules {
		if !Owned(r.Chain) && Owned(r.target()) {
			haveJumps = append(haveJumps, r)
		}
	}

	// Our chains: same set, same rules in the same order.
	rewriteChains := len(stale) > 0
	for _, c := range stale {
		why = append(why, "stale chain "+c)
	}
	for _, c := range wantChains {
		switch {
		case !slices.Contains(haveChains, c):
			why = append(why, "missing chain "+c)
			rewriteChains = true
		case !equalRules(have.chainRules(c), wantRules[c]):
			why = append(why, "rules of "+c+" differ")
			rewriteChains = true
		case restored(have.chainRules(c)):
			why = append(why, "rules of "+c+" "+rulesWhy)
			rewriteChains = true
		}
	}

	// Jumps: per calling chain, exactly the wanted ones in order, at the
	// top where they must come first, ahead of any RETURN where they must be
	// reached. fix are the calling chains to put right.
	var from, fix []string
	for _, r := range slices.Concat(haveJumps, wantJumps) {
		if !slices.Contains(from, r.Chain) {
			from = append(from, r.Chain)
		}
	}
	for _, c := range from {
		h, w := inChain(haveJumps, c), inChain(wantJumps, c)
		switch {
		case !equalRules(h, w):
			why = append(why, fmt.Sprintf("jumps from %s differ (have %d, want %d)", c, len(h), len(w)))
		case jumpFirst[[2]string{table, c}] && !equalRules(head(have.chainRules(c), len(w)), w):
			why = append(why, "jump from "+c+" not first")
		case jumpIfChain[[2]string{table, c}] && behindReturn(have.chainRules(c)):
			why = append(why, "jump from "+c+" behind a RETURN")
		case restored(h):
			why = append(why, "jump from "+c+" "+jumpWhy)
		default:
			continue
		}
		fix = append(fix, c)
	}

	if !rewriteChains && len(fix) == 0 {
		return nil, nil
	}

	// counters go after the chain (and position) of each rule we write.
	counters := ""
	if stamp {
		counters = fmt.Sprintf(" -c 0 %d", uint64(stampBytes))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "*%s\n", table)
	if rewriteChains {
		// Declaring a chain creates it or, existing, flushes it; both inside
		// this transaction, so nobody sees it empty.
		for _, c := range slices.Concat(wantChains, stale) {
			fmt.Fprintf(&b, ":%s - [0:0]\n", c)
		}
	}
	if len(fix) > 0 {
		// Delete by the rule as read, not by number: if the chain changed
		// since it was read, the transaction fails instead of deleting
		// someone else's rule.
		for _, r := range haveJumps {
			if slices.Contains(fix, r.Chain) {
				fmt.Fprintf(&b, "-D %s\n", strings.TrimPrefix(r.String(), "-A "))
			}
		}
		pos := map[string]int{}
		for _, r := range wantJumps {
			switch k := [2]string{table, r.Chain}; {
			case !slices.Contains(fix, r.Chain):
			case jumpFirst[k] || jumpIfChain[k]:
				pos[r.Chain]++
				fmt.Fprintf(&b, "-I %s %d%s%s\n", quote(r.Chain), pos[r.Chain], counters, r.args())
			default:
				fmt.Fprintf(&b, "-A %s%s%s\n", quote(r.Chain), counters, r.args())
			}
		}
	}
	if rewriteChains {
		for _, c := range wantChains {
			for _, r := range wantRules[c] {
				fmt.Fprintf(&b, "-A %s%s%s\n", quote(c), counters, r.args())
			}
		}
		for _, c := range stale {
			fmt.Fprintf(&b, "-X %s\n", c)
		}
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String()), why
}

// behindReturn reports whether a jump into one of our chains comes after an
// unconditional RETURN in rules, where no packet reaches it.
func behindReturn(rules []Rule) bool {
	returned := false
	for _, r := range rules {
		switch {
		case slices.Equal(r.Spec, []string{"-j", "RETURN"}):
			returned = true
		case returned && Owned(r.target()):
			return true
		}
	}
	return false
}

func inChain(rules []Rule, chain string) []Rule {
	var out []Rule
	for _, r := range rules {
		if r.Chain == chain {
			out = append(out, r)
		}
	}
	return out
}

func head(rules []Rule, n int) []Rule {
	return rules[:min(n, len(rules))]
}

func equalRules(a, b []Rule) bool {
	return slices.EqualFunc(a, b, func(x, y Rule) bool { return x.Chain == y.Chain && slices.Equal(x.Spec, y.Spec) })
}
