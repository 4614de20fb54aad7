package iptables

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend/internal/nstest"
	"github.com/go-logr/logr"
)

// Root tests: real iptables-save and iptables-restore, each test in a network
// namespace of its own, so the host's tables are never read or written.

// need fails the test when CI is set (CI runs as root with iptables
// installed, so a missing piece there is a broken setup) and skips it
// otherwise.
func need(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: root tests must run; run `make deps` as root)", msg)
	}
	t.Skipf("%s; skipping (set CI=1 to make this a failure)", msg)
}

// testLogger sends the Manager's log lines, all levels, to t.Log.
func testLogger(t *testing.T) logr.Logger {
	return logr.New(tlogSink{t})
}

type tlogSink struct{ t *testing.T }

func (tlogSink) Init(logr.RuntimeInfo) {}
func (tlogSink) Enabled(int) bool      { return true }
func (s tlogSink) Error(err error, msg string, kv ...any) {
	s.t.Helper()
	s.t.Log(append([]any{"ERROR", msg, "err", err}, kv...)...)
}
func (s tlogSink) Info(level int, msg string, kv ...any) {
	s.t.Helper()
	s.t.Log(append([]any{msg}, kv...)...)
}
func (s tlogSink) WithValues(...any) logr.LogSink { return s }
func (s tlogSink) WithName(string) logr.LogSink   { return s }

// newNetns creates a fresh network namespace (nstest's: deleted when the
// test ends however it ends, and by the next run if this one is killed),
// and returns the command prefix that runs inside it.
func newNetns(t *testing.T) []string {
	t.Helper()
	if os.Geteuid() != 0 {
		need(t, "root test: needs root, running as uid %d", os.Geteuid())
	}
	for _, bin := range []string{"ip", "iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			need(t, "root test: %s not found (apt-get install iproute2 iptables)", bin)
		}
	}
	return []string{"ip", "netns", "exec", nstest.New(t).Name}
}

// inNetns runs a command inside the namespace, failing the test on error.
func inNetns(t *testing.T, prefix []string, args ...string) string {
	t.Helper()
	argv := append(append([]string{}, prefix...), args...)
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

type rootFamily struct {
	family                   Family
	bin                      string // iptables or ip6tables
	network, subnet, foreign string
}

var rootFamilies = []rootFamily{
	{IPv4, "iptables", "10.244.0.0/16", "10.244.5.0/24", "198.19.99.0/24"},
	{IPv6, "ip6tables", "fd10:244::/56", "fd10:244:0:5::/64", "2001:db8::/32"},
}

// saved is `iptables-save -t table` inside the namespace without its
// "# Generated/Completed" comment lines. save names the binary of the
// backend under test, e.g. iptables-save or ip6tables-legacy-save.
func saved(t *testing.T, prefix []string, save, table string) string {
	t.Helper()
	var b strings.Builder
	for _, l := range strings.SplitAfter(inNetns(t, prefix, save, "-t", table), "\n") {
		if !strings.HasPrefix(l, "#") {
			b.WriteString(l)
		}
	}
	return b.String()
}

// Golden iptables-save text for the IPv4 family after Reconcile on top of
// the foreign rules the test puts in first; the IPv6 text differs only in
// the addresses (see goldenFor).
const (
	rootGoldenNat = `*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AGENTD-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-A POSTROUTING -s 198.19.99.0/24 ! -o lo -j MASQUERADE
-A AGENTD-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.5.0/24 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
COMMIT
`
	rootGoldenFilter = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:AGENTD-FWD - [0:0]
:DOCKER-USER - [0:0]
:FOREIGN - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j FOREIGN
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD
-A DOCKER-USER -j RETURN
-A FOREIGN -s 198.19.99.0/24 -j DROP
COMMIT
`
)

func goldenFor(fam rootFamily, golden string, randomFully bool) string {
	if fam.family == IPv6 {
		golden = strings.NewReplacer("10.244.0.0/16", fam.network, "10.244.5.0/24", fam.subnet,
			"198.19.99.0/24", fam.foreign, "224.0.0.0/4", "ff00::/8").Replace(golden)
	}
	if !randomFully {
		golden = strings.ReplaceAll(golden, " --random-fully", "")
	}
	return golden
}

// stripOurs removes our chains and jumps from golden, leaving what the
// foreign software had.
func stripOurs(golden string) string {
	var b strings.Builder
	for _, l := range strings.SplitAfter(golden, "\n") {
		if !strings.Contains(l, ChainPrefix) {
			b.WriteString(l)
		}
	}
	return b.String()
}

func TestRootReconcile(t *testing.T) {
	for _, fam := range rootFamilies {
		t.Run(fam.family.String(), func(t *testing.T) { testRootReconcile(t, fam, "nf_tables") })
	}
}

// The same with `iptables` being the legacy one: New must pick
// iptables-legacy-save and -restore, not the generic names (which here are
// nf_tables), or it would read one backend and write the other.
func TestRootReconcileLegacy(t *testing.T) {
	legacyPATH(t)
	for _, fam := range rootFamilies {
		t.Run(fam.family.String(), func(t *testing.T) { testRootReconcile(t, fam, "legacy") })
	}
}

func testRootReconcile(t *testing.T, fam rootFamily, mode string) {
	ns := newNetns(t)
	save := fam.bin + "-save"
	if mode == "legacy" {
		save = fam.bin + "-legacy-save"
	}
	x := func(args ...string) { inNetns(t, ns, append([]string{fam.bin}, args...)...) }
	// Other software's rules, there before us.
	x("-t", "nat", "-A", "POSTROUTING", "-s", fam.foreign, "!", "-o", "lo", "-j", "MASQUERADE")
	x("-t", "filter", "-P", "FORWARD", "DROP")
	x("-t", "filter", "-N", "FOREIGN")
	x("-t", "filter", "-A", "FOREIGN", "-s", fam.foreign, "-j", "DROP")
	x("-t", "filter", "-A", "FORWARD", "-j", "FOREIGN")
	// dockerd before 28: DOCKER-USER, first in FORWARD, ending in RETURN.
	x("-t", "filter", "-N", DockerUserChain)
	x("-t", "filter", "-A", DockerUserChain, "-j", "RETURN")
	x("-t", "filter", "-I", "FORWARD", "1", "-j", DockerUserChain)

	m, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns})
	if err != nil {
		t.Fatal(err)
	}
	r := m.run.(*execRunner)
	for _, bin := range []string{r.save, r.restore} {
		if _, got, err := versionOf(bin); err != nil || got != mode {
			t.Fatalf("%s is %q (%v), want the %s backend", bin, got, err, mode)
		}
	}
	wantNat := goldenFor(fam, rootGoldenNat, m.RandomFully())
	wantFilter := goldenFor(fam, rootGoldenFilter, m.RandomFully())
	check := func(what string) {
		t.Helper()
		diffText(t, what+": nat", saved(t, ns, save, "nat"), wantNat)
		diffText(t, what+": filter", saved(t, ns, save, "filter"), wantFilter)
	}
	network, subnet := netip.MustParsePrefix(fam.network), netip.MustParsePrefix(fam.subnet)
	desired := append(MasqRules(network, subnet, m.RandomFully()), ForwardRules(network)...)

	mustReconcile(t, m, desired, true)
	check("first Reconcile")
	mustReconcile(t, m, desired, false)

	// What iptables-save prints, ParseSave reads and prints back
	// unchanged.
	for _, table := range []string{"nat", "filter"} {
		s := saved(t, ns, save, table)
		d, err := ParseSave([]byte(s))
		if err != nil {
			t.Fatal(err)
		}
		diffText(t, "ParseSave round trip", d.String(), s)
	}

	// Tampering by hand, then repair.
	for _, tamper := range [][]string{
		{"-t", "nat", "-D", MasqChain, "1"},
		{"-t", "nat", "-D", "POSTROUTING", "1"},
		{"-t", "nat", "-I", "POSTROUTING", "1", "-s", fam.foreign, "-j", "RETURN"},
		{"-t", "filter", "-F", ForwardChain},
		{"-t", "filter", "-A", "FORWARD", "-j", ForwardChain},
		{"-t", "filter", "-D", DockerUserChain, "1"},
	} {
		x(tamper...)
		mustReconcile(t, m, desired, true)
		if tamper[3] == "POSTROUTING" && tamper[2] == "-I" {
			x("-t", "nat", "-D", "POSTROUTING", "-s", fam.foreign, "-j", "RETURN")
		}
		check(strings.Join(tamper, " "))
		mustReconcile(t, m, desired, false)
	}

	// Forward rules switched off, then everything removed.
	mustReconcile(t, m, MasqRules(network, subnet, m.RandomFully()), true)
	diffText(t, "masq only: filter", saved(t, ns, save, "filter"), stripOurs(wantFilter))
	diffText(t, "masq only: nat", saved(t, ns, save, "nat"), wantNat)
	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	diffText(t, "removed: nat", saved(t, ns, save, "nat"), stripOurs(wantNat))
	diffText(t, "removed: filter", saved(t, ns, save, "filter"), stripOurs(wantFilter))
	if err := m.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
}

// A rule the kernel refuses fails the whole transaction: nothing of it is
// applied, and the error names the command, says why and quotes the line of
// input iptables-restore refused.
func TestRootRestoreIsAtomic(t *testing.T) {
	ns := newNetns(t)
	m, err := New(IPv4, testLogger(t), Options{CommandPrefix: ns})
	if err != nil {
		t.Fatal(err)
	}
	before := saved(t, ns, "iptables-save", "nat")
	bad := append(MasqRules(testNetwork, testSubnet, false),
		Rule{Table: "nat", Chain: MasqChain, Spec: []string{"-m", "nosuchmatch", "-j", "RETURN"}})
	change, err := m.Reconcile(bad)
	if change != Unchanged || err == nil || !strings.Contains(err.Error(), "iptables-") || !strings.Contains(err.Error(), "write table nat") ||
		!strings.Contains(err.Error(), ": -A "+MasqChain+" -c 0 1099511627776 -m nosuchmatch -j RETURN") {
		t.Fatalf("change=%v err=%v", change, err)
	}
	t.Logf("error as reported: %v", err)
	diffText(t, "nat after a failed restore", saved(t, ns, "iptables-save", "nat"), before)
}

// When only the generic iptables-save is there and it is of the other
// backend, New refuses rather than reading tables `iptables` does not use.
func TestFindToolsBackendMismatch(t *testing.T) {
	legacy, err1 := exec.LookPath("xtables-legacy-multi")
	nft, err2 := exec.LookPath("xtables-nft-multi")
	if err1 != nil || err2 != nil {
		need(t, "xtables-legacy-multi and xtables-nft-multi not found (apt-get install iptables)")
	}
	dir := t.TempDir()
	for name, target := range map[string]string{"iptables": legacy, "iptables-save": nft, "iptables-restore": legacy} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("PATH", dir)
	_, err := New(IPv4, logr.Discard(), Options{})
	if err == nil || !strings.Contains(err.Error(), "no iptables-save for the legacy backend") {
		t.Fatalf("New = %v, want a backend mismatch", err)
	}
	t.Log(err)
}

func TestFindToolsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := New(IPv4, logr.Discard(), Options{})
	if err == nil || !strings.Contains(err.Error(), "iptables") {
		t.Fatalf("New with no iptables in PATH: %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct{ in, version, mode string }{
		{"iptables v1.8.9 (nf_tables)\n", "1.8.9", "nf_tables"},
		{"iptables v1.8.7 (legacy)", "1.8.7", "legacy"},
		{"ip6tables v1.6.1", "1.6.1", "legacy"},
		{"iptables-save v1.8.9 (nf_tables)", "1.8.9", "nf_tables"},
	} {
		v, m, err := parseVersion(tc.in)
		if err != nil || v != tc.version || m != tc.mode {
			t.Errorf("parseVersion(%q) = %q, %q, %v", tc.in, v, m, err)
		}
	}
	if _, _, err := parseVersion("nonsense"); err == nil {
		t.Error("parseVersion(nonsense) did not fail")
	}
}
