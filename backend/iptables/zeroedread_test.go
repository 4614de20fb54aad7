package iptables

import (
	"strings"
	"testing"
)

// Legacy iptables-save reads every rule's counters as zero for a moment
// while another program writes the table: libiptc replaces the whole table
// (the kernel starts the new one's counters at zero) and then adds the old
// counters back, in a second call. kube-proxy's iptables-restore of its own
// chains and dockerd's iptables commands do that to nat. Seen in a
// namespace: with iptables-legacy-restore --noflush --counters of a foreign
// chain in a loop, 3 of 400 reads of `iptables-legacy-save -c -t nat` gave
// our stamped rules as [0:0]. Such a read is no reload.

// TestReconcileZeroedReadNoReload: a check whose read of nat falls in
// that moment writes nothing, and Wrote("nat") stays false (no conntrack
// clean-up, no drift repair); a real reload is still written again. Before,
// the read was taken for a reload: nat rewritten, "restored by another
// program".
func TestReconcileZeroedReadNoReload(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		name := "nft"
		if legacy {
			name = "legacy"
		}
		t.Run(name, func(t *testing.T) {
			m, f := newTestManager(t)
			m.legacy, f.legacy = legacy, legacy
			mustReconcile(t, m, testRules(true), true)
			f.traffic("nat", 100)
			mustReconcile(t, m, testRules(true), false)

			n := len(f.restores)
			zeroOnce(f)
			if c := mustReconcile(t, m, testRules(true), false); c != Unchanged || m.Wrote("nat") {
				t.Errorf("after a read of zero counters: %v, Wrote(nat) %v; want %v, false", c, m.Wrote("nat"), Unchanged)
			}
			if got := f.restores[n:]; len(got) != 0 {
				t.Errorf("restores after a read of zero counters: %q, want none", got)
			}

			f.reload(t, "nat")
			if c := mustReconcile(t, m, testRules(true), true); c != Restamped || !m.Wrote("nat") {
				t.Errorf("after a reload: %v, Wrote(nat) %v; want %v, true", c, m.Wrote("nat"), Restamped)
			}
			mustReconcile(t, m, testRules(true), false)
		})
	}
}

// TestReconcileZeroedReadBackKeepsStamp: the read back of nat right after
// our write (checkStamp) falling in that moment does not give the stamp up,
// so a reload right after is noticed and our rules are written stamped.
// Before, the stamp was given up for good (logged as "this iptables does
// not set a rule's counters"), and that reload went unnoticed.
func TestReconcileZeroedReadBackKeepsStamp(t *testing.T) {
	m, f := newTestManager(t)
	// The first Reconcile reads nat, writes it, and reads it back.
	f.zeroed = func(table string) bool { return table == "nat" && f.saves["nat"] == 2 }
	mustReconcile(t, m, testRules(true), true)
	if m.noStamp {
		t.Errorf("stamp given up after a read back of zero counters")
	}
	f.zeroed = nil
	f.reload(t, "nat")
	n := len(f.restores)
	if c := mustReconcile(t, m, testRules(true), true); c != Restamped || !m.Wrote("nat") {
		t.Fatalf("after a reload: %v, Wrote(nat) %v; want %v, true", c, m.Wrote("nat"), Restamped)
	}
	if got := f.restores[n:]; len(got) != 1 || strings.Count(got[0], " -c 0 1099511627776 ") != 6 {
		t.Errorf("restores after the reload %q, want nat's, each of our 6 rules stamped", got)
	}
}

// zeroOnce makes f's next Save of nat (or of every table, legacy) read
// every rule's counters as zero.
func zeroOnce(f *fake) {
	done := false
	f.zeroed = func(table string) bool {
		if done || (table != "nat" && table != "") {
			return false
		}
		done = true
		return true
	}
}
