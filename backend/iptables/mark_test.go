package iptables

import (
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

func TestParseMark(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Mark
		err  string // part of the error; "" for none
	}{
		{in: "0x200000/0x200000", want: Mark{0x200000, 0x200000}},
		{in: "2/3", want: Mark{2, 3}},
		{in: "0X10/0xF0", want: Mark{0x10, 0xf0}},
		{in: "0b1/0b11", want: Mark{1, 3}},
		{in: "0x80000000/0x80000000", want: Mark{0x80000000, 0x80000000}},
		{in: "", err: "empty mark"},
		{in: "0x200000/", err: "empty mask"},
		{in: "/0x200000", err: "empty mark"},
		{in: "0x200000/0x200000/1", err: `mask "0x200000/1" is not a 32-bit number`},
		{in: "0x100000000/0x100000000", err: `mark "0x100000000" is not a 32-bit number`},
		{in: "-1/1", err: "is not a 32-bit number"},
		{in: " 1/1", err: "is not a 32-bit number"},
		{in: "mark", err: `mark "mark" is not a 32-bit number`},
		{in: "0/0x200000", err: "must not be 0"},
		{in: "0x3/0x1", err: "mark 0x3 has bits outside mask 0x1"},
		{in: "0x4000/0x4000", err: "kube-proxy's masquerade bit"},
		{in: "0x200000/0x204000", err: "kube-proxy's masquerade bit"},
		// dockerd's form without a mask matches the whole mark, which
		// would overwrite kube-proxy's bit too.
		{in: "0x200000", err: "without a mask, the mask is 0xffffffff"},
	} {
		got, err := ParseMark(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("ParseMark(%q): %v", tc.in, err)
		case tc.err == "" && got != tc.want:
			t.Errorf("ParseMark(%q) = %v, want %v", tc.in, got, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("ParseMark(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
		}
	}
}

// FuzzParseMark: ParseMark never panics; a Mark it returns passes Check,
// prints as one token iptables-save prints back, and parses again to itself.
func FuzzParseMark(f *testing.F) {
	for _, s := range []string{"0x200000/0x200000", "2/3", "0x200000", "0/0", "0x4000/0x4000", "010/0o70", "1_0/0xff", "/", "0x1/0x1/0x1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMark(s)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("ParseMark(%q): empty error", s)
			}
			return
		}
		if err := m.Check(); err != nil || m.IsZero() {
			t.Fatalf("ParseMark(%q) = %v, which Check refuses (%v) or is zero", s, m, err)
		}
		p := m.String()
		if strings.ContainsAny(p, " \t\n\"") {
			t.Fatalf("ParseMark(%q) prints as %q", s, p)
		}
		again, err := ParseMark(p)
		if err != nil || again != m {
			t.Fatalf("ParseMark(%q) = %v, printed %q, parsed again %v, %v", s, m, p, again, err)
		}
	})
}

func TestMarkRulesGolden(t *testing.T) {
	rules := MarkRules(testNetwork, Mark{0x200000, 0x200000})
	want := `-A FORWARD -m comment --comment "agentd docker mark" -j AGENTD-MARK
-A AGENTD-MARK -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd docker mark" -j MARK --set-xmark 0x200000/0x200000
`
	diffText(t, "mark rules", text(rules), want)
	for _, r := range rules {
		if r.Table != "mangle" {
			t.Errorf("rule %q in table %s, want mangle", r, r.Table)
		}
	}
	if err := validate(rules); err != nil {
		t.Error(err)
	}
}

// The mark chain comes and goes with the setting, like the other chains,
// and a mangle table that held nothing before is read each pass.
func TestReconcileMarkFake(t *testing.T) {
	m, f := newTestManager(t)
	withMark := append(testRules(true), MarkRules(testNetwork, Mark{0x200000, 0x200000})...)
	mustReconcile(t, m, withMark, true)
	const ours = `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AGENTD-MARK - [0:0]
-A FORWARD -m comment --comment "agentd docker mark" -j AGENTD-MARK
-A AGENTD-MARK -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd docker mark" -j MARK --set-xmark 0x200000/0x200000
COMMIT
`
	diffText(t, "mangle after Reconcile", f.tables["mangle"].text("mangle", false), ours)
	mustReconcile(t, m, withMark, false)

	// Someone flushes our chain: it is refilled.
	f.must(t, "mangle", "-D AGENTD-MARK 1")
	mustReconcile(t, m, withMark, true)
	diffText(t, "mangle after repair", f.tables["mangle"].text("mangle", false), ours)

	// The setting turned off: chain and jump go, the other tables stay.
	mustReconcile(t, m, testRules(true), true)
	diffText(t, "mangle without the mark", f.tables["mangle"].text("mangle", false), stripOurs(ours))
	diffText(t, "filter and nat", f.tables["filter"].text("filter", false)+f.tables["nat"].text("nat", false), goldenFake)
}

// With legacy iptables, a table in which nothing of ours is wanted is read
// only when loaded (see TestRootLegacyLoadsOnlyWantedTables): here nat and
// mangle are not, and only the mark loads mangle.
func TestReconcileLegacyFake(t *testing.T) {
	f := newFake()
	f.legacy = true
	delete(f.tables, "nat")
	m := newManager(IPv4, f, true, true, logr.Discard())
	tables := func(what, want string) {
		t.Helper()
		if got := strings.Join(slices.Sorted(maps.Keys(f.tables)), " "); got != want {
			t.Errorf("%s: tables %q, want %q", what, got, want)
		}
	}
	fwd := ForwardRules(testNetwork)
	mustReconcile(t, m, fwd, true)
	mustReconcile(t, m, fwd, false)
	tables("forward rules", "filter")
	withMark := append(slices.Clone(fwd), MarkRules(testNetwork, Mark{0x200000, 0x200000})...)
	mustReconcile(t, m, withMark, true)
	tables("with the mark", "filter mangle")
	mustReconcile(t, m, fwd, true)
	if s := f.tables["mangle"].text("mangle", false); strings.Contains(s, ChainPrefix) {
		t.Errorf("mark off, mangle still has ours:\n%s", s)
	}
	if len(f.saves) != 1 || f.saves[""] == 0 {
		t.Errorf("saves %v, want only whole-kernel ones", f.saves)
	}
}

// legacySave adds sections to a fake's whole-kernel Save, for tables the
// fake does not hold.
type legacySave struct {
	*fake
	extra string
}

func (l legacySave) Save(table string) ([]byte, error) {
	out, err := l.fake.Save(table)
	if table == "" && err == nil {
		out = append([]byte(l.extra), out...)
	}
	return out, err
}

// With legacy iptables one iptables-save prints every loaded table. One
// agentd does not manage (raw, security) may hold what the parser refuses
// (here a comment with a newline in it, printed so by iptables-legacy-save
// v1.8.9): that must not fail the check; the same in filter, mangle or nat
// must, naming the table.
func TestReconcileLegacySkipsOtherTables(t *testing.T) {
	for _, table := range []string{"raw", "security", "filter", "mangle", "nat"} {
		t.Run(table, func(t *testing.T) {
			f := newFake()
			f.legacy = true
			delete(f.tables, table)
			extra := "*" + table + "\n:OUTPUT ACCEPT [0:0]\n-A OUTPUT -m comment --comment \"a\nb\" -j ACCEPT\nCOMMIT\n"
			m := newManager(IPv4, legacySave{f, extra}, true, true, logr.Discard())
			change, err := m.Reconcile(ForwardRules(testNetwork))
			if table == "raw" || table == "security" {
				if err != nil || change != Rewritten {
					t.Fatalf("Reconcile = %v, %v; want the forward rules written", change, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "table "+table) || !strings.Contains(err.Error(), "unterminated quote") {
				t.Fatalf("Reconcile = %v, %v; want a parse error naming table %s", change, err, table)
			}
			if change != Unchanged || len(f.restores) != 0 {
				t.Errorf("wrote %q after a parse error", f.restores)
			}
		})
	}
}

// The real iptables prints the mark rule back exactly as MarkRules writes
// it (else every pass would rewrite the chain), in both backends, and
// Remove takes it away; a foreign mangle rule stays.
func TestRootMarkRules(t *testing.T) {
	for _, mode := range []string{"nf_tables", "legacy"} {
		t.Run(mode, func(t *testing.T) {
			ns := newNetns(t)
			save := "iptables-save"
			if mode == "legacy" {
				legacyPATH(t)
				save = "iptables-legacy-save"
			}
			inNetns(t, ns, "iptables", "-t", "mangle", "-A", "FORWARD", "-s", "198.19.99.0/24", "-j", "MARK", "--set-xmark", "0x1/0x1")
			m, err := New(IPv4, testLogger(t), Options{CommandPrefix: ns})
			if err != nil {
				t.Fatal(err)
			}
			desired := MarkRules(testNetwork, Mark{0x200000, 0x200000})
			mustReconcile(t, m, desired, true)
			mustReconcile(t, m, desired, false)
			want := `*mangle
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AGENTD-MARK - [0:0]
-A FORWARD -s 198.19.99.0/24 -j MARK --set-xmark 0x1/0x1
-A FORWARD -m comment --comment "agentd docker mark" -j AGENTD-MARK
-A AGENTD-MARK -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd docker mark" -j MARK --set-xmark 0x200000/0x200000
COMMIT
`
			diffText(t, "mangle", saved(t, ns, save, "mangle"), want)
			if err := m.Remove(); err != nil {
				t.Fatal(err)
			}
			diffText(t, "mangle after Remove", saved(t, ns, save, "mangle"), stripOurs(want))
		})
	}
}

// Legacy iptables-save -t creates the table it reads when the kernel has
// none yet (it then hooks every packet): a table in which nothing of ours is
// wanted is read only where it exists. Forward rules alone load filter and
// no other table; the mark loads mangle, and its chain goes when it is off.
func TestRootLegacyLoadsOnlyWantedTables(t *testing.T) {
	legacyPATH(t)
	for _, fam := range rootFamilies {
		t.Run(fam.family.String(), func(t *testing.T) {
			ns := newNetns(t)
			names := "/proc/net/ip_tables_names"
			if fam.family == IPv6 {
				names = "/proc/net/ip6_tables_names"
			}
			loaded := func(what, want string) {
				t.Helper()
				got := strings.Fields(inNetns(t, ns, "cat", names))
				slices.Sort(got)
				if strings.Join(got, " ") != want {
					t.Errorf("%s: tables loaded %q, want %q", what, got, want)
				}
			}
			m, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns})
			if err != nil {
				t.Fatal(err)
			}
			if r := m.run.(*execRunner); !strings.Contains(r.save, "legacy") {
				t.Fatalf("save is %s, want the legacy one", r.save)
			}
			if err := m.Remove(); err != nil {
				t.Fatal(err)
			}
			loaded("Remove on an empty namespace", "")

			network := netip.MustParsePrefix(fam.network)
			fwd := ForwardRules(network)
			mustReconcile(t, m, fwd, true)
			mustReconcile(t, m, fwd, false)
			loaded("forward rules", "filter")

			withMark := append(slices.Clone(fwd), MarkRules(network, Mark{0x200000, 0x200000})...)
			mustReconcile(t, m, withMark, true)
			mustReconcile(t, m, withMark, false)
			loaded("with the mark", "filter mangle")
			save := fam.bin + "-legacy-save"
			if s := saved(t, ns, save, "mangle"); !strings.Contains(s, ":"+MarkChain+" ") {
				t.Fatalf("no %s in mangle:\n%s", MarkChain, s)
			}

			mustReconcile(t, m, fwd, true)
			mustReconcile(t, m, fwd, false)
			if s := saved(t, ns, save, "mangle"); strings.Contains(s, ChainPrefix) {
				t.Errorf("mark off, mangle still has ours:\n%s", s)
			}
			if err := m.Remove(); err != nil {
				t.Fatal(err)
			}
			mustReconcile(t, m, nil, false)
			loaded("after Remove", "filter mangle")
		})
	}
}

// The real iptables-legacy-save prints a comment with a newline in it as
// two lines, which the parser refuses: in raw (not ours) the check passes
// over it, in nat it fails naming the table.
func TestRootLegacySkipsOtherTables(t *testing.T) {
	legacyPATH(t)
	for _, fam := range rootFamilies {
		t.Run(fam.family.String(), func(t *testing.T) {
			ns := newNetns(t)
			m, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns})
			if err != nil {
				t.Fatal(err)
			}
			fwd := ForwardRules(netip.MustParsePrefix(fam.network))
			inNetns(t, ns, fam.bin, "-t", "raw", "-A", "PREROUTING", "-m", "comment", "--comment", "a\nb", "-j", "ACCEPT")
			mustReconcile(t, m, fwd, true)
			mustReconcile(t, m, fwd, false)
			inNetns(t, ns, fam.bin, "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "a\nb", "-j", "ACCEPT")
			if _, err := m.Reconcile(fwd); err == nil || !strings.Contains(err.Error(), "(table nat): unterminated quote") {
				t.Fatalf("Reconcile: %v, want a parse error in table nat", err)
			}
		})
	}
}

// legacyPATH puts a directory first in PATH whose iptables and ip6tables
// are the legacy ones, for New to pick that backend.
func legacyPATH(t *testing.T) {
	t.Helper()
	multi, err := exec.LookPath("xtables-legacy-multi")
	if err != nil {
		need(t, "xtables-legacy-multi not found (apt-get install iptables)")
	}
	dir := t.TempDir()
	for _, name := range []string{"iptables", "ip6tables"} {
		if err := os.Symlink(multi, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}
