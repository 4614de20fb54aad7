package iptables

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/go-logr/logr"
)

// seedForeign gives the fake rules of other software: dockerd's masquerade
// and a firewall chain. Reconcile must leave them as they are.
func seedForeign(t *testing.T, f *fake) {
	t.Helper()
	f.must(t, "nat", "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE")
	f.must(t, "filter", ":FOREIGN - [0:0]", "-A FOREIGN -s 192.0.2.0/24 -j DROP", "-A FORWARD -j FOREIGN")
}

const foreignOnly = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
-A FORWARD -j FOREIGN
-A FOREIGN -s 192.0.2.0/24 -j DROP
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
`

// goldenFake is the fake's tables after Reconcile(testRules(true)) on top of
// the foreign rules: our jump first in POSTROUTING, appended in FORWARD.
const goldenFake = `*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:FOREIGN - [0:0]
:AGENTD-FWD - [0:0]
-A FORWARD -j FOREIGN
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A FOREIGN -s 192.0.2.0/24 -j DROP
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:AGENTD-POSTRTG - [0:0]
-A POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A AGENTD-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.5.0/24 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
COMMIT
`

func newTestManager(t *testing.T) (*Manager, *fake) {
	t.Helper()
	f := newFake()
	seedForeign(t, f)
	return newManager(IPv4, f, true, false, logr.Discard()), f
}

// mustReconcile reconciles desired, fails t unless that changed something
// (any Change but Unchanged) as wantChanged says, and returns the Change.
func mustReconcile(t *testing.T, m *Manager, desired []Rule, wantChanged bool) Change {
	t.Helper()
	change, err := m.Reconcile(desired)
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if (change != Unchanged) != wantChanged {
		t.Fatalf("Reconcile: %v, want a change %v", change, wantChanged)
	}
	return change
}

func diffText(t *testing.T, what, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("%s:\n%s\nwant:\n%s", what, got, want)
	}
}

func TestReconcileFake(t *testing.T) {
	m, f := newTestManager(t)
	diffText(t, "before", f.String(), foreignOnly)

	mustReconcile(t, m, testRules(true), true)
	diffText(t, "after Reconcile", f.String(), goldenFake)
	if got := len(f.restores); got != 2 {
		t.Errorf("%d restores, want one per table (2)", got)
	}

	// Again: nothing to do, and one iptables-save per table per call.
	mustReconcile(t, m, testRules(true), false)
	diffText(t, "after second Reconcile", f.String(), goldenFake)
	if got := len(f.restores); got != 2 {
		t.Errorf("%d restores after a no-op Reconcile, want 2", got)
	}
	// nat once more: read back after its write, to see the stamp set
	// (checkStamp).
	if f.saves["nat"] != 3 || f.saves["filter"] != 2 || f.saves["mangle"] != 2 || len(f.saves) != 3 {
		t.Errorf("saves = %v, want filter and mangle twice each, nat three times", f.saves)
	}
}

// The first restore of a table writes our chains and jumps in one
// transaction; this is that input, in full.
func TestReconcileRestoreInput(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)
	want := []string{`*filter
:AGENTD-FWD - [0:0]
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
COMMIT
`, `*nat
:AGENTD-POSTRTG - [0:0]
-I POSTROUTING 1 -c 0 1099511627776 -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-A AGENTD-POSTRTG -c 0 1099511627776 -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -c 0 1099511627776 -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -c 0 1099511627776 -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
-A AGENTD-POSTRTG -c 0 1099511627776 ! -s 10.244.0.0/16 -d 10.244.5.0/24 -m comment --comment "agentd masq" -j RETURN
-A AGENTD-POSTRTG -c 0 1099511627776 ! -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd masq" -j MASQUERADE --random-fully
COMMIT
`}
	if !slices.Equal(f.restores, want) {
		t.Errorf("restores:\n%s\nwant:\n%s", strings.Join(f.restores, ""), strings.Join(want, ""))
	}
}

// What an operator or other software may do to our rules; Reconcile must
// put back exactly goldenFake.
func TestReconcileRepairs(t *testing.T) {
	for _, tc := range []struct {
		name, table string
		lines       []string
	}{
		{"rule deleted", "nat", []string{"-D AGENTD-POSTRTG 1"}},
		{"last rule deleted", "nat", []string{"-D AGENTD-POSTRTG 5"}},
		{"chain flushed", "filter", []string{":AGENTD-FWD - [0:0]"}},
		{"rule added to our chain", "nat", []string{"-A AGENTD-POSTRTG -j MASQUERADE"}},
		{"rules reordered", "nat", []string{"-D AGENTD-POSTRTG 1", `-A AGENTD-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "agentd masq" -j RETURN`}},
		{"jump deleted", "nat", []string{"-D POSTROUTING 1"}},
		{"jump moved down", "nat", []string{"-D POSTROUTING 1", `-A POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG`}},
		{"jump duplicated", "filter", []string{`-I FORWARD 1 -m comment --comment "agentd forward" -j AGENTD-FWD`}},
		{"jump of an older version", "filter", []string{"-A FORWARD -j AGENTD-FWD"}},
		{"jump from another chain", "nat", []string{"-A OUTPUT -j AGENTD-POSTRTG"}},
		{"stale chain of ours", "nat", []string{":AGENTD-OLD - [0:0]", "-A AGENTD-OLD -j RETURN", "-A PREROUTING -g AGENTD-OLD"}},
		{"everything gone", "nat", []string{"-D POSTROUTING 1", ":AGENTD-POSTRTG - [0:0]", "-X AGENTD-POSTRTG"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, f := newTestManager(t)
			mustReconcile(t, m, testRules(true), true)
			f.must(t, tc.table, tc.lines...)
			if f.String() == goldenFake {
				t.Fatal("tampering changed nothing")
			}
			mustReconcile(t, m, testRules(true), true)
			diffText(t, "repaired", f.String(), goldenFake)
			mustReconcile(t, m, testRules(true), false)
		})
	}
}

// A foreign rule put on top of POSTROUTING: our jump goes back to the top and
// the foreign rule stays, right below it.
func TestReconcileJumpBackOnTop(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)
	f.must(t, "nat", "-I POSTROUTING 1 -s 198.51.100.0/24 -j MASQUERADE")
	mustReconcile(t, m, testRules(true), true)
	want := strings.Replace(goldenFake,
		"-j AGENTD-POSTRTG\n", "-j AGENTD-POSTRTG\n-A POSTROUTING -s 198.51.100.0/24 -j MASQUERADE\n", 1)
	diffText(t, "after", f.String(), want)
	if n := len(f.restores); !strings.Contains(f.restores[n-1], "-I POSTROUTING 1 ") || strings.Contains(f.restores[n-1], ":AGENTD-POSTRTG") {
		t.Errorf("moving the jump should not rewrite the chain:\n%s", f.restores[n-1])
	}
}

func TestReconcileDisableAndRemove(t *testing.T) {
	m, f := newTestManager(t)
	mustReconcile(t, m, testRules(true), true)

	// Forward rules switched off: AGENTD-FWD and its jump go, nat stays.
	mustReconcile(t, m, MasqRules(testNetwork, testSubnet, true), true)
	filter, _, _ := strings.Cut(foreignOnly, "*nat")
	_, nat, _ := strings.Cut(goldenFake, "COMMIT\n*nat")
	diffText(t, "masq only", f.String(), filter+"*nat"+nat)

	// A new subnet: the chain is rewritten.
	mustReconcile(t, m, MasqRules(testNetwork, netip.MustParsePrefix("10.244.9.0/24"), true), true)
	if !strings.Contains(f.String(), "-d 10.244.9.0/24") || strings.Contains(f.String(), "10.244.5.0/24") {
		t.Errorf("subnet change not applied:\n%s", f)
	}

	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	diffText(t, "after Remove", f.String(), foreignOnly)
	n := len(f.restores)
	if err := m.Remove(); err != nil {
		t.Fatal(err)
	}
	if len(f.restores) != n {
		t.Error("Remove with nothing to remove ran a restore")
	}
}

func TestReconcileErrors(t *testing.T) {
	boom := errors.New("boom")
	t.Run("save fails", func(t *testing.T) {
		m, f := newTestManager(t)
		f.saveErr = boom
		change, err := m.Reconcile(testRules(true))
		if change != Unchanged || !errors.Is(err, boom) || !strings.Contains(err.Error(), "read table nat") {
			t.Errorf("change=%v err=%v", change, err)
		}
	})
	t.Run("save cut short", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "nat", "-D AGENTD-POSTRTG 1")
		f.truncate = len("COMMIT\n# Completed\n")
		change, err := m.Reconcile(testRules(true))
		if change != Unchanged || err == nil || !strings.Contains(err.Error(), "no COMMIT") {
			t.Errorf("change=%v err=%v", change, err)
		}
		if len(f.restores) != 2 {
			t.Error("restored after a read cut short")
		}
	})
	t.Run("restore fails", func(t *testing.T) {
		m, f := newTestManager(t)
		f.restoreErr = boom
		change, err := m.Reconcile(testRules(true))
		if change != Unchanged || !errors.Is(err, boom) || !strings.Contains(err.Error(), "write table filter") ||
			!strings.Contains(err.Error(), "write table nat") || !strings.Contains(err.Error(), "missing chain AGENTD-POSTRTG") {
			t.Errorf("change=%v err=%v", change, err)
		}
		diffText(t, "untouched", f.String(), foreignOnly)
	})
	// iptables-nft-save up to 1.8.9 prints a table holding rules made
	// with nft (not iptables) as one comment line, and exits 0. Read as
	// an empty table, each pass would add another jump; it must be an
	// error naming the table instead, with nothing written to it.
	t.Run("table iptables-nft cannot show", func(t *testing.T) {
		m, f := newTestManager(t)
		f.incompatible = "nat"
		for range 3 {
			change, err := m.Reconcile(testRules(true))
			if err == nil || !strings.Contains(err.Error(), "table nat") || !strings.Contains(err.Error(), "nft") ||
				strings.Contains(err.Error(), "filter") {
				t.Fatalf("change=%v err=%v, want an error naming table nat and nft", change, err)
			}
			t.Log(err)
		}
		for _, r := range f.restores {
			if strings.HasPrefix(r, "*nat") {
				t.Errorf("restored into the table it cannot read:\n%s", r)
			}
		}
		// The filter table is not held back by nat.
		if len(f.restores) != 1 || !strings.HasPrefix(f.restores[0], "*filter") {
			t.Errorf("restores %q, want the filter table's once", f.restores)
		}
	})
	// Such a table in which no rule of ours is wanted (mangle without the
	// Docker mark; nat without masquerade) is no error: the agent must not
	// stay unready for a table it has no use for.
	t.Run("table iptables-nft cannot show, nothing wanted there", func(t *testing.T) {
		m, f := newTestManager(t)
		f.incompatible = "mangle"
		for range 2 {
			if _, err := m.Reconcile(testRules(true)); err != nil {
				t.Fatalf("err=%v, want none: nothing of ours is wanted in mangle", err)
			}
		}
		for _, r := range f.restores {
			if strings.HasPrefix(r, "*mangle") {
				t.Errorf("restored into the table it cannot read:\n%s", r)
			}
		}
		f.incompatible = "nat"
		if _, err := m.Reconcile(ForwardRules(testNetwork)); err != nil {
			t.Errorf("nat unreadable without masquerade: err=%v, want none", err)
		}
	})
	// From 1.8.10 on, iptables-nft-save prints what iptables can show of
	// such a table after a comment saying it has more: that is a table
	// like any other.
	t.Run("table with chains iptables-nft cannot show", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		out, err := f.Save("nat")
		if err != nil {
			t.Fatal(err)
		}
		d, err := ParseSave(append([]byte("# Table `nat' contains incompatible base-chains, use 'nft' tool to list them.\n"), out...))
		if err != nil {
			t.Fatal(err)
		}
		if data, why := plan(d.Table("nat"), MasqRules(testNetwork, testSubnet, true), true, nil); data != nil {
			t.Errorf("plan wants to change the table: %s\n%s", why, data)
		}
	})
	t.Run("bad desired rules", func(t *testing.T) {
		m, f := newTestManager(t)
		_, err := m.Reconcile([]Rule{{Table: "nat", Chain: "POSTROUTING", Spec: []string{"-j", "MASQUERADE"}}})
		if err == nil || len(f.saves) != 0 {
			t.Errorf("err=%v saves=%v", err, f.saves)
		}
	})
	t.Run("rule the kernel refuses", func(t *testing.T) {
		m, f := newTestManager(t)
		_, err := m.Reconcile([]Rule{{Table: "nat", Chain: MasqChain, Spec: []string{"-j", "NOSUCHTARGET"}}})
		if err == nil || !strings.Contains(err.Error(), "NOSUCHTARGET") {
			t.Errorf("err=%v", err)
		}
		diffText(t, "untouched", f.String(), foreignOnly)
	})
}

func TestPlan(t *testing.T) {
	synced := func(table string) string {
		_, after, _ := strings.Cut(goldenFake, "*"+table+"\n")
		body, _, _ := strings.Cut(after, "COMMIT\n")
		return "*" + table + "\n" + body + "COMMIT\n"
	}
	for _, tc := range []struct {
		name, have string
		want       []Rule
		restore    string
		why        string
	}{
		{"in sync", synced("filter"), ForwardRules(testNetwork), "", ""},
		{"foreign rules only", "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n", nil, "", ""},
		{"table missing", "", ForwardRules(testNetwork), `*filter
:AGENTD-FWD - [0:0]
-A FORWARD -m comment --comment "agentd forward" -j AGENTD-FWD
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
COMMIT
`, "missing chain AGENTD-FWD; jumps from FORWARD differ (have 0, want 1)"},
		{"one rule missing: chain rewritten, jump kept", strings.Replace(synced("filter"),
			"-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment \"agentd forward\" -j ACCEPT\n", "", 1),
			ForwardRules(testNetwork), `*filter
:AGENTD-FWD - [0:0]
-A AGENTD-FWD -s 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment "agentd forward" -j ACCEPT
COMMIT
`, "rules of AGENTD-FWD differ"},
		{"jump not first: only the jump moves", strings.Replace(synced("nat"),
			"-A POSTROUTING -m comment --comment \"agentd masq\" -j AGENTD-POSTRTG\n-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n",
			"-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n-A POSTROUTING -m comment --comment \"agentd masq\" -j AGENTD-POSTRTG\n", 1),
			MasqRules(testNetwork, testSubnet, true), `*nat
-D POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-I POSTROUTING 1 -c 0 1099511627776 -m comment --comment "agentd masq" -j AGENTD-POSTRTG
COMMIT
`, "jump from POSTROUTING not first"},
		{"remove", synced("nat"), nil, `*nat
:AGENTD-POSTRTG - [0:0]
-D POSTROUTING -m comment --comment "agentd masq" -j AGENTD-POSTRTG
-X AGENTD-POSTRTG
COMMIT
`, "stale chain AGENTD-POSTRTG; jumps from POSTROUTING differ (have 1, want 0)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseSave([]byte(tc.have))
			if err != nil {
				t.Fatal(err)
			}
			table := "filter"
			if len(tc.want) > 0 {
				table = tc.want[0].Table
			} else if len(d.Tables) > 0 {
				table = d.Tables[0].Name
			}
			have := d.Table(table)
			if have == nil {
				have = &Table{Name: table}
			}
			data, why := plan(have, tc.want, stampTables[table], nil)
			diffText(t, "restore input", string(data), tc.restore)
			diffText(t, "why", strings.Join(why, "; "), tc.why)
		})
	}
}

// TestReconcileRandomTampering applies random sequences of what other
// software may do, then checks Reconcile against the obvious model: our
// part of each table is exactly the golden one, our jump is on top of
// POSTROUTING, every foreign rule is still there in the same order, and a
// second Reconcile has nothing to do.
func TestReconcileRandomTampering(t *testing.T) {
	ours := func(line string) bool {
		return strings.Contains(line, ChainPrefix)
	}
	split := func(s string) (our, foreign []string) {
		for _, l := range strings.Split(s, "\n") {
			if ours(l) {
				our = append(our, l)
			} else {
				foreign = append(foreign, l)
			}
		}
		return our, foreign
	}
	goldenOurs, _ := split(goldenFake)
	ops := []func(r *rand.Rand, f *fake){
		func(r *rand.Rand, f *fake) {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-D AGENTD-POSTRTG %d\nCOMMIT\n", 1+r.IntN(6)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("filter", fmt.Sprintf("*filter\n-D AGENTD-FWD %d\nCOMMIT\n", 1+r.IntN(3)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-D POSTROUTING %d\nCOMMIT\n", 1+r.IntN(3)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("filter", fmt.Sprintf("*filter\n-D FORWARD %d\nCOMMIT\n", 1+r.IntN(3)))
		},
		func(r *rand.Rand, f *fake) { _ = f.apply("nat", "*nat\n:AGENTD-POSTRTG - [0:0]\nCOMMIT\n") },
		func(r *rand.Rand, f *fake) {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-I POSTROUTING %d -s 198.51.100.%d/32 -j RETURN\nCOMMIT\n", 1+r.IntN(2), r.IntN(256)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("filter", fmt.Sprintf("*filter\n-I FORWARD %d -s 203.0.113.%d/32 -j DROP\nCOMMIT\n", 1+r.IntN(2), r.IntN(256)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("nat", fmt.Sprintf("*nat\n-I POSTROUTING %d -m comment --comment \"agentd masq\" -j AGENTD-POSTRTG\nCOMMIT\n", 1+r.IntN(2)))
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("filter", "*filter\n:AGENTD-OLD - [0:0]\n-A AGENTD-OLD -j ACCEPT\n-A INPUT -j AGENTD-OLD\nCOMMIT\n")
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("nat", "*nat\n-A AGENTD-POSTRTG -j MASQUERADE\n-I AGENTD-POSTRTG 1 -j RETURN\nCOMMIT\n")
		},
		func(r *rand.Rand, f *fake) {
			_ = f.apply("filter", "*filter\n-D FORWARD -m comment --comment \"agentd forward\" -j AGENTD-FWD\n:AGENTD-FWD - [0:0]\n-X AGENTD-FWD\nCOMMIT\n")
		},
	}
	r := rand.New(rand.NewPCG(1, 2))
	repaired := 0
	for i := range 300 {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		for range 1 + r.IntN(6) {
			ops[r.IntN(len(ops))](r, f)
		}
		_, foreignBefore := split(f.String())
		tampered := f.String()
		change, err := m.Reconcile(testRules(true))
		if err != nil {
			t.Fatalf("round %d: %v\ntampered:\n%s", i, err, tampered)
		}
		switch change {
		case Rewritten:
			repaired++
		case NewChainJumps:
			t.Fatalf("round %d: tampering with our rules taken for a chain made since\ntampered:\n%s", i, tampered)
		}
		our, foreign := split(f.String())
		if !slices.Equal(our, goldenOurs) {
			t.Fatalf("round %d: our rules\n%s\nwant\n%s\ntampered:\n%s", i, strings.Join(our, "\n"), strings.Join(goldenOurs, "\n"), tampered)
		}
		if !slices.Equal(foreign, foreignBefore) {
			t.Fatalf("round %d: foreign rules changed\n%s\nwant\n%s", i, strings.Join(foreign, "\n"), strings.Join(foreignBefore, "\n"))
		}
		if nat := f.tables["nat"].chain("POSTROUTING"); (Rule{Spec: nat.rules[0].spec}).target() != MasqChain {
			t.Fatalf("round %d: POSTROUTING does not start with our jump:\n%s", i, f)
		}
		mustReconcile(t, m, testRules(true), false)
	}
	// Most random tampering hits our rules; if it did not, this test
	// would prove little.
	if repaired < 200 {
		t.Errorf("only %d of 300 rounds needed a repair", repaired)
	}
}

// dockerUserJump is our jump from Docker's DOCKER-USER chain, as the fake
// (and iptables-save) prints it.
const dockerUserJump = `-A DOCKER-USER -s 10.244.0.0/16 -d 10.244.0.0/16 -m comment --comment "agentd forward" -j AGENTD-FWD`

// withDockerUser is goldenFake on a host whose dockerd made DOCKER-USER
// (and jumps to it first in FORWARD) holding the lines rules: our jump is
// inserted at the top of DOCKER-USER. The fake lists chains, and their
// rules, in the order they were made: dockerFirst says DOCKER-USER came
// before our chain.
func withDockerUser(dockerFirst bool, rules ...string) string {
	decl, ours := ":DOCKER-USER - [0:0]\n", ":AGENTD-FWD - [0:0]\n"
	s := goldenFake
	body := strings.Join(append([]string{dockerUserJump}, rules...), "\n") + "\n"
	if dockerFirst {
		s = strings.Replace(s, ours, decl+ours, 1)
		at := "-A AGENTD-FWD -s "
		s = strings.Replace(s, at, body+at, 1)
	} else {
		s = strings.Replace(s, ours, ours+decl, 1)
		at := "-A AGENTD-FWD -d 10.244.0.0/16 -m comment --comment \"agentd forward\" -j ACCEPT\n"
		s = strings.Replace(s, at, at+body, 1)
	}
	return strings.Replace(s, "-A FORWARD -j FOREIGN\n", "-A FORWARD -j DOCKER-USER\n-A FORWARD -j FOREIGN\n", 1)
}

// addDockerUser does what dockerd does at start: DOCKER-USER (Docker 28
// leaves it empty, older ones end it with a RETURN), jumped to first in
// FORWARD.
func addDockerUser(t *testing.T, f *fake, rules ...string) {
	t.Helper()
	f.must(t, "filter", append([]string{":DOCKER-USER - [0:0]", "-I FORWARD 1 -j DOCKER-USER"}, rules...)...)
}

// TestReconcileDockerUser: where dockerd's DOCKER-USER chain exists (Docker
// evaluates it first in FORWARD; from 28 on its DOCKER chain drops traffic
// routed to containers before our appended FORWARD jump), it gets a jump into
// our chain for cluster-to-cluster traffic, ahead of its RETURN if it has
// one; DOCKER-USER itself is never created or deleted. Our jump put into a
// DOCKER-USER made since the previous Reconcile is NewChainJumps, not
// Rewritten: nothing of ours was altered (the agent counts no drift repair).
func TestReconcileDockerUser(t *testing.T) {
	t.Run("Docker 28: empty DOCKER-USER", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f)
		if c := mustReconcile(t, m, testRules(true), true); c != Rewritten {
			t.Errorf("first installation: %v, want %v", c, Rewritten)
		}
		diffText(t, "after", f.String(), withDockerUser(true))
		mustReconcile(t, m, testRules(true), false)
	})
	t.Run("Docker before 28: ahead of the RETURN", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f, "-A DOCKER-USER -j RETURN")
		mustReconcile(t, m, testRules(true), true)
		diffText(t, "after", f.String(), withDockerUser(true, "-A DOCKER-USER -j RETURN"))
		mustReconcile(t, m, testRules(true), false)
	})
	t.Run("dockerd started after us", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		diffText(t, "before dockerd", f.String(), goldenFake)
		addDockerUser(t, f, "-A DOCKER-USER -j RETURN")
		n := len(f.restores)
		if c := mustReconcile(t, m, testRules(true), true); c != NewChainJumps {
			t.Errorf("DOCKER-USER made since: %v, want %v", c, NewChainJumps)
		}
		diffText(t, "after dockerd", f.String(), withDockerUser(false, "-A DOCKER-USER -j RETURN"))
		// One jump added, nothing else rewritten (our FORWARD jump
		// stays where it is).
		want := "*filter\n" + strings.Replace(dockerUserJump, "-A DOCKER-USER", "-I DOCKER-USER 1", 1) + "\nCOMMIT\n"
		if got := f.restores[n:]; len(got) != 1 || got[0] != want {
			t.Errorf("restores %q, want %q", got, want)
		}
		mustReconcile(t, m, testRules(true), false)
	})
	t.Run("a rule the user puts above ours stays", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f, "-A DOCKER-USER -j RETURN")
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "filter", "-I DOCKER-USER 1 -s 203.0.113.0/24 -j DROP")
		mustReconcile(t, m, testRules(true), false)
	})
	t.Run("our jump behind the RETURN is moved up", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f, "-A DOCKER-USER -j RETURN")
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "filter", "-D DOCKER-USER 1", dockerUserJump)
		if c := mustReconcile(t, m, testRules(true), true); c != Rewritten {
			t.Errorf("jump moved behind the RETURN: %v, want %v", c, Rewritten)
		}
		diffText(t, "repaired", f.String(), withDockerUser(true, "-A DOCKER-USER -j RETURN"))
	})
	t.Run("our jump deleted from a DOCKER-USER made since", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		addDockerUser(t, f)
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "filter", "-D DOCKER-USER 1")
		if c := mustReconcile(t, m, testRules(true), true); c != Rewritten {
			t.Errorf("jump deleted: %v, want %v", c, Rewritten)
		}
		diffText(t, "repaired", f.String(), withDockerUser(false))
	})
	t.Run("DOCKER-USER made since, and our FORWARD jump deleted", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "filter", "-D FORWARD -m comment --comment \"agentd forward\" -j AGENTD-FWD")
		addDockerUser(t, f)
		if c := mustReconcile(t, m, testRules(true), true); c != Rewritten {
			t.Errorf("FORWARD's jump deleted as DOCKER-USER came: %v, want %v", c, Rewritten)
		}
	})
	t.Run("DOCKER-USER made since, its jump's restore failed", func(t *testing.T) {
		m, f := newTestManager(t)
		mustReconcile(t, m, testRules(true), true)
		addDockerUser(t, f)
		f.restoreErr = errors.New("boom")
		if _, err := m.Reconcile(testRules(true)); err == nil {
			t.Fatal("Reconcile did not fail")
		}
		f.restoreErr = nil
		if c := mustReconcile(t, m, testRules(true), true); c != NewChainJumps {
			t.Errorf("retried: %v, want %v", c, NewChainJumps)
		}
	})
	t.Run("forward rules off, and removed", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f, "-A DOCKER-USER -j RETURN")
		mustReconcile(t, m, testRules(true), true)
		mustReconcile(t, m, MasqRules(testNetwork, testSubnet, true), true)
		if err := m.Remove(); err != nil {
			t.Fatal(err)
		}
		diffText(t, "removed", f.String(), stripOurs(withDockerUser(true, "-A DOCKER-USER -j RETURN")))
	})
	t.Run("DOCKER-USER deleted by dockerd", func(t *testing.T) {
		m, f := newTestManager(t)
		addDockerUser(t, f)
		mustReconcile(t, m, testRules(true), true)
		f.must(t, "filter", "-D FORWARD -j DOCKER-USER", ":DOCKER-USER - [0:0]", "-X DOCKER-USER")
		mustReconcile(t, m, testRules(true), false)
		diffText(t, "after", f.String(), goldenFake)
	})
}
