package iptables

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// TestReconcileReloadedRules: a reload of saved rules holding ours (the
// table flushed and restored as it was) leaves our rules in place, with
// their counters reset: the next Reconcile writes nat again, once, with why
// it did, and Wrote("nat") tells the caller (whose traffic may have left
// unmasqueraded in the flush's gap). Filter, where nothing outlives the
// gap, is left as the reload put it; a check after the repair, and one of
// rules nobody touched, write nothing.
func TestReconcileReloadedRules(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)
	mustReconcile(t, m, testRules(true), false)

	f.reload(t, "nat")
	f.reload(t, "filter")
	n := len(f.restores)
	if c := mustReconcile(t, m, testRules(true), true); c != Restamped {
		t.Errorf("Reconcile after the reload: %v, want %v", c, Restamped)
	}
	if !m.Wrote("nat") || m.Wrote("filter") {
		t.Errorf("Wrote nat %v, filter %v; want true, false", m.Wrote("nat"), m.Wrote("filter"))
	}
	if got := f.restores[n:]; len(got) != 1 || !strings.HasPrefix(got[0], "*nat\n") || strings.Count(got[0], " -c 0 1099511627776 ") != 6 {
		t.Errorf("restores after the reload %q, want nat's, each of our 6 rules stamped", got)
	}
	diffText(t, "after the repair", f.String(), goldenFake)
	mustReconcile(t, m, testRules(true), false)
}

// TestReconcileReloadedJump: a restore of POSTROUTING alone (our chain left
// as we wrote it) has the jump written again, and only the jump.
func TestReconcileReloadedJump(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)
	f.must(t, "nat", `-D POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG`,
		`-I POSTROUTING 1 -m comment --comment "agentd masq" -j AGENTD-POSTRTG`)
	n := len(f.restores)
	mustReconcile(t, m, testRules(true), true)
	want := `*nat
-D POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-I POSTROUTING 1 -c 0 1099511627776 -m comment --comment "agentd masq" -j AGENTD-POSTRTG
COMMIT
`
	if got := f.restores[n:]; !slices.Equal(got, []string{want}) {
		t.Errorf("restores %q, want %q", got, want)
	}
	mustReconcile(t, m, testRules(true), false)
}

// TestReconcileRestoredWithCounters: a restore that sets the counters it
// read (iptables-save -c, later iptables-restore -c) keeps the stamp, but
// not the traffic our rules counted since the save: the check after it
// finds their counters lower than at the check before, and writes nat
// again. Restored as they were at the last check, they cannot be told
// from ours.
func TestReconcileRestoredWithCounters(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)
	f.traffic("nat", 100)
	mustReconcile(t, m, testRules(true), false)
	saved := f.tables["nat"].text("nat", true)
	f.traffic("nat", 60)
	mustReconcile(t, m, testRules(true), false)

	if err := f.apply("nat", saved); err != nil {
		t.Fatal(err)
	}
	if c := mustReconcile(t, m, testRules(true), true); c != Restamped || !m.Wrote("nat") {
		t.Errorf("after a restore -c of counters older than the last check: %v, Wrote(nat) %v; want %v, true", c, m.Wrote("nat"), Restamped)
	}
	mustReconcile(t, m, testRules(true), false)

	f.traffic("nat", 60)
	mustReconcile(t, m, testRules(true), false)
	if err := f.apply("nat", f.tables["nat"].text("nat", true)); err != nil {
		t.Fatal(err)
	}
	mustReconcile(t, m, testRules(true), false)
}

// TestReconcileCountersNotSet: with an iptables that does not set a rule's
// counters (ip6tables-nft 1.8.9), our rules read back unstamped after their
// first write: the Manager stops stamping rather than rewrite them at every
// check, and writes without -c from then on. A reload after our rules
// counted traffic is still noticed, by their counters going back, and told
// by Gap, not Wrote: nothing is written.
func TestReconcileCountersNotSet(t *testing.T) {
	f := newFake()
	f.dropCounters = true
	seedForeign(t, f)
	m := newManager(IPv6, f, true, false, logr.Discard())
	mustReconcile(t, m, testRules(true), true)
	mustReconcile(t, m, testRules(true), false)
	mustReconcile(t, m, testRules(true), false)
	f.must(t, "nat", ":AGENTD-POSTRTG - [0:0]")
	mustReconcile(t, m, testRules(true), true)
	if last := f.restores[len(f.restores)-1]; strings.Contains(last, " -c ") {
		t.Errorf("restore after the stamp was given up:\n%s\nwant no -c", last)
	}
	mustReconcile(t, m, testRules(true), false)

	f.reload(t, "nat")
	mustReconcile(t, m, testRules(true), false)
	f.traffic("nat", 100)
	mustReconcile(t, m, testRules(true), false)
	f.reload(t, "nat")
	if c := mustReconcile(t, m, testRules(true), true); c != CountersWentBack || m.Wrote("nat") || !m.Gap("nat") {
		t.Errorf("after a reload of rules that had counted traffic: %v, Wrote(nat) %v, Gap(nat) %v; want %v, false, true", c, m.Wrote("nat"), m.Gap("nat"), CountersWentBack)
	}
	mustReconcile(t, m, testRules(true), false)
	if m.Gap("nat") {
		t.Error("Gap(nat) at the check after, which found nothing")
	}
}

// TestRootReloadedRules: in a namespace, with real iptables of each backend
// and family, a firewall's reload of a set saved with our rules
// (`iptables-save -t nat > f; iptables -t nat -F; iptables-restore < f`)
// is found at the next Reconcile, which writes nat again and says so in
// Wrote; the one after writes nothing. With an iptables that cannot set a
// rule's counters (ip6tables-nft 1.8.9) the reload of rules that counted no
// traffic goes unnoticed, as the Manager logged when it gave the stamp up.
func TestRootReloadedRules(t *testing.T) {
	for _, mode := range []string{ModeNFT, ModeLegacy} {
		for _, fam := range rootFamilies {
			t.Run(mode+"/"+fam.family.String(), func(t *testing.T) {
				ns := newNetns(t)
				m, err := New(fam.family, testLogger(t), Options{CommandPrefix: ns, Mode: mode})
				if err != nil {
					t.Fatal(err)
				}
				network, subnet := netip.MustParsePrefix(fam.network), netip.MustParsePrefix(fam.subnet)
				desired := MasqRules(network, subnet, m.RandomFully())
				mustReconcile(t, m, desired, true)
				mustReconcile(t, m, desired, false)
				before := saved(t, ns, fam.bin+"-"+mode+"-save", "nat")
				f := filepath.Join(t.TempDir(), "saved")
				inNetns(t, ns, "sh", "-c", fmt.Sprintf("%[1]s-%[2]s-save -t nat >%[3]s && %[1]s-%[2]s -t nat -F && %[1]s-%[2]s-restore <%[3]s", fam.bin, mode, f))
				if m.noStamp {
					t.Logf("%s-%s does not set a rule's counters: the reload of rules that counted no traffic goes unnoticed", fam.bin, mode)
					mustReconcile(t, m, desired, false)
					return
				}
				if c := mustReconcile(t, m, desired, true); c != Restamped || !m.Wrote("nat") {
					t.Errorf("after the reload: %v, Wrote(nat) %v; want %v, true", c, m.Wrote("nat"), Restamped)
				}
				diffText(t, "nat after the repair", saved(t, ns, fam.bin+"-"+mode+"-save", "nat"), before)
				mustReconcile(t, m, desired, false)
			})
		}
	}
}

// TestReconcileCountersNotSetNotRestamped: without the stamp (an iptables
// that does not set a rule's counters), our rules found as desired but with
// their counters gone back (a reload after they counted traffic) are left
// in place: written again without -c they would read the same. Neither the
// result nor the log says they were stamped or written, and the next check,
// comparing with the counters they have now, finds nothing. Before, nat was
// written again only for the caller's conntrack read (Wrote), which Gap
// tells now.
func TestReconcileCountersNotSetNotRestamped(t *testing.T) {
	f := newFake()
	f.dropCounters = true
	seedForeign(t, f)
	var logs []string
	m := newManager(IPv6, f, true, false, funcr.New(func(prefix, args string) {
		logs = append(logs, args)
	}, funcr.Options{Verbosity: 2}))
	mustReconcile(t, m, testRules(true), true)
	mustReconcile(t, m, testRules(true), false)
	if !m.noStamp {
		t.Fatal("the Manager kept the stamp with an iptables that does not set counters")
	}
	f.traffic("nat", 100)
	mustReconcile(t, m, testRules(true), false)
	f.reload(t, "nat")
	logs = nil
	n := len(f.restores)
	c := mustReconcile(t, m, testRules(true), true)
	if c != CountersWentBack || c.String() != "counters went back, left unstamped" || m.Wrote("nat") || !m.Gap("nat") {
		t.Errorf("after a reload of rules that had counted traffic: %v, Wrote(nat) %v, Gap(nat) %v; want counters went back, left unstamped, false, true", c, m.Wrote("nat"), m.Gap("nat"))
	}
	if got := f.restores[n:]; len(got) != 0 {
		t.Errorf("restores %q, want none", got)
	}
	all := strings.Join(logs, "\n")
	if strings.Contains(all, "stamped again") || strings.Contains(all, "written") ||
		!strings.Contains(all, `"msg"="iptables rules left in place, their counters gone back (this iptables does not set a rule's counters)"`) {
		t.Errorf("log:\n%s\nwant \"iptables rules left in place …\", nothing stamped or written", all)
	}
	mustReconcile(t, m, testRules(true), false)
	f.traffic("nat", 100)
	mustReconcile(t, m, testRules(true), false)
	f.reload(t, "nat")
	if c := mustReconcile(t, m, testRules(true), true); c != CountersWentBack || len(f.restores) != n {
		t.Errorf("after a second reload of rules that had counted traffic: %v, %d restores; want %v, none", c, len(f.restores)-n, CountersWentBack)
	}
}
