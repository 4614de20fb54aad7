package iptables

import (
	"fmt"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestReconcileUpgradeFromUnstamped: the nat rules an agentd before the
// stamp (3b1d13e) wrote are ours token for token, but unstamped: their
// counters are the traffic's only, as those of rules a restore put back
// while no agentd ran, so the first check of an upgraded agent cannot tell
// them apart and writes them once, stamped (Restamped, logged at V(2)). It
// says why without claiming a restore it did not see: no earlier check read
// them, so no counter "went back". A check after that writes nothing, and
// one after a restore does say so.
func TestReconcileUpgradeFromUnstamped(t *testing.T) {
	f := newFake()
	seedForeign(t, f)
	// The previous release: the same rules, written without -c.
	old := newManager(IPv4, f, true, false, funcr.New(func(string, string) {}, funcr.Options{}))
	old.noStamp = true
	mustReconcile(t, old, testRules(true), true)
	f.traffic("nat", 1500)

	var logged []string
	m := newManager(IPv4, f, true, false, funcr.New(func(prefix, args string) {
		logged = append(logged, args)
	}, funcr.Options{Verbosity: 2}))
	n := len(f.restores)
	if c := mustReconcile(t, m, testRules(true), true); c != Restamped || !m.Wrote("nat") || m.Wrote("filter") {
		t.Errorf("first check after the upgrade: %v, Wrote nat %v filter %v; want %v, true, false", c, m.Wrote("nat"), m.Wrote("filter"), Restamped)
	}
	if got := f.restores[n:]; len(got) != 1 || strings.Count(got[0], " -c 0 1099511627776 ") != 6 {
		t.Errorf("restores %q, want nat's, each of our 6 rules stamped", got)
	}
	all := strings.Join(logged, "\n")
	if !strings.Contains(all, `"rules of AGENTD-POSTRTG not stamped (written by an agentd before the stamp, or restored by another program while none ran)"`) ||
		strings.Contains(all, "went back") {
		t.Errorf("logged:\n%s\nwant why: not stamped, and no counters that went back", all)
	}
	mustReconcile(t, m, testRules(true), false)

	logged = nil
	f.reload(t, "nat")
	mustReconcile(t, m, testRules(true), true)
	if all := strings.Join(logged, "\n"); !strings.Contains(all, fmt.Sprintf("%q", "rules of "+MasqChain+" restored by another program (their counters went back)")) {
		t.Errorf("logged after a reload:\n%s\nwant the rules restored by another program", all)
	}
}

// TestReconcileZeroedCounters: `iptables -t nat -Z` leaves our rules in
// place with their counters zero, as a restore of saved rules does: the
// check writes them again, stamped, but reports Restamped, not Rewritten,
// and logs nothing at the default verbosity; whether a flush let flows
// leave unNATed is the caller's to read in conntrack.
func TestReconcileZeroedCounters(t *testing.T) {
	var logged []string
	f := newFake()
	seedForeign(t, f)
	m := newManager(IPv4, f, true, false, funcr.New(func(prefix, args string) {
		logged = append(logged, args)
	}, funcr.Options{}))
	mustReconcile(t, m, testRules(true), true)
	f.traffic("nat", 1500)
	mustReconcile(t, m, testRules(true), false)
	logged = nil
	for _, c := range f.tables["nat"].chains {
		for i := range c.rules {
			c.rules[i].counters = Counters{}
		}
	}
	if c := mustReconcile(t, m, testRules(true), true); c != Restamped || !m.Wrote("nat") {
		t.Errorf("after iptables -t nat -Z: %v, Wrote(nat) %v; want %v, true", c, m.Wrote("nat"), Restamped)
	}
	if len(logged) > 0 {
		t.Errorf("logged at V(0):\n%s", strings.Join(logged, "\n"))
	}
	mustReconcile(t, m, testRules(true), false)
}
