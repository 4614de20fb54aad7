package cniplugin

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestMasqRetryBudget: after a node-wide failure has left many records in
// masqRetryDir, a command retries its own and then others' for
// masqRetryBudget only, the oldest first, and later commands take up where
// it stopped until none is left. Before, the first ADD or DEL once iptables
// worked again retried every record: here 200 at 25 ms each (iptables,
// ip6tables and nft, several runs each) kept one ADD 5 s; 3000 records
// would be over a minute, past the runtime's timeouts, failing the pod.
func TestMasqRetryBudget(t *testing.T) {
	const (
		records = 200
		step    = 25 * time.Millisecond // one removal, on the fixture's clock
	)
	f := newFixture(t)
	f.writeEnv(t, envA)
	live := liveNetns(t, f)
	f.masq.chains = map[string]bool{}
	var want []string // the chains, the oldest record first
	base := time.Now().Add(-time.Hour)
	for i := range records {
		id := fmt.Sprintf("p%03d", i)
		f.masq.chains["cbr0 "+id] = true
		want = append(want, "cbr0 "+id)
		if err := recordMasqRetry(f.dataDir, "cbr0", id, "eth0", f.now); err != nil {
			t.Fatal(err)
		}
		mod := base.Add(time.Duration(i) * time.Second)
		if err := os.Chtimes(filepath.Join(f.dataDir, masqRetryDir, "cbr0:"+id+":eth0"), mod, mod); err != nil {
			t.Fatal(err)
		}
	}
	f.masq.during = func() { f.now = f.now.Add(step) }
	// A command starts no other removal once masqRetryBudget has passed.
	most := int((masqRetryBudget + step - 1) / step)

	// An ADD of the pod with the newest record: its own first, then the
	// others, the oldest first, for masqRetryBudget.
	own := want[records-1]
	start := f.now
	if err := f.p.Add(f.args("p199", "")); err != nil {
		t.Fatalf("ADD of p199: %v", err)
	}
	took := f.now.Sub(start)
	if len(f.masq.removed) == 0 || f.masq.removed[0] != own {
		t.Fatalf("ADD of p199 removed %d chains, starting with %q, want its own %q first", len(f.masq.removed), f.masq.removed[:min(1, len(f.masq.removed))], own)
	}
	others := f.masq.removed[1:]
	if len(others) == 0 || len(others) > most || took > step+masqRetryBudget+step {
		t.Errorf("ADD of p199 removed its own chain and %d others of %d records in %v of removals (%v each), want 1 to %d others, in %v at most",
			len(others), records-1, took, step, most, step+masqRetryBudget+step)
	}
	if !slices.Equal(others, want[:len(others)]) {
		t.Errorf("ADD of p199 removed the others' chains %q, want the oldest records' first %q", others, want[:min(len(others), len(want))])
	}

	// Later commands, each bounded alike, finish the rest.
	for cmd := 0; len(fileNames(t, filepath.Join(f.dataDir, masqRetryDir))) > 0; cmd++ {
		if cmd == records {
			t.Fatalf("%d commands after ADD of p199, %s still holds %d records", cmd, masqRetryDir, len(fileNames(t, filepath.Join(f.dataDir, masqRetryDir))))
		}
		before, start := len(f.masq.removed), f.now
		var err error
		if cmd%2 == 0 {
			a := f.args(fmt.Sprintf("d%d", cmd), "")
			a.Netns = live
			err = f.p.Del(a)
		} else {
			err = f.p.GC(asV110(f.args("d", `,"cni.dev/valid-attachments":[{"containerID":"p199","ifname":"eth0"}]`)))
		}
		if err != nil {
			t.Fatalf("command %d after ADD of p199: %v", cmd, err)
		}
		if n, took := len(f.masq.removed)-before, f.now.Sub(start); n == 0 || n > most || took > masqRetryBudget+step {
			t.Errorf("command %d after ADD of p199 removed %d chains in %v, want 1 to %d in %v at most", cmd, n, took, most, masqRetryBudget+step)
		}
	}
	if got := append([]string{own}, want[:records-1]...); !slices.Equal(f.masq.removed, got) {
		t.Errorf("chains removed %q, want %q", f.masq.removed, got)
	}
	if len(f.masq.chains) != 0 {
		t.Errorf("chains left %v", f.masq.chains)
	}
}
