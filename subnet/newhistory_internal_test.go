package subnet

import (
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCarriedPeersAreNotEtcds: the peers a list of a new history lacked stay
// in Peers (see carryLocked) but are not etcd's keys: the witness read after
// each reconnect (checkWitness) counts only what etcd holds, or every
// reconnect during the grace would find the history replaced again. A
// later list of the same history carries them on; a write of a carried key
// ends its carry; the end of the grace removes the rest.
func TestCarriedPeersAreNotEtcds(t *testing.T) {
	m := benchManager(t)
	m.cfg.NewHistoryGrace = time.Hour
	kv1, kv2, kv3 := leaseKV(1, 10), leaseKV(2, 11), leaseKV(3, 12)
	m.replaceTable([]*mvccpb.KeyValue{kv1, kv2, kv3}, 12)

	peers := func() string {
		var s []string
		for _, l := range m.Peers() {
			s = append(s, l.Subnet.String())
		}
		return strings.Join(s, " ")
	}
	check := func(step, want string, count int64) {
		t.Helper()
		if got := peers(); got != want {
			t.Errorf("%s: peers %q, want %q", step, got, want)
		}
		if w := m.witness(); w.count != count {
			t.Errorf("%s: witness counts %d keys, etcd holds %d", step, w.count, count)
		}
	}

	// The new history holds only kv1's key, written at its revision 3.
	n1 := leaseKV(1, 3)
	n, kept := m.listed([]keyState{m.reg.keyState(n1)}, 3, true, false)
	if n != 3 || strings.Join(kept, " ") != "10.0.3.0/24 10.0.4.0/24" {
		t.Errorf("listed: %d peers, kept %q; want 3, those of kv2 and kv3", n, kept)
	}
	check("after the list of the new history", "10.0.2.0/24 10.0.3.0/24 10.0.4.0/24", 1)
	if w := m.witness(); w.keys[string(n1.Key)] != 3 || len(w.keys) != 2 {
		t.Errorf("witness keys %v, want our key absent and %s at 3", w.keys, n1.Key)
	}

	m.applyEvents([]*clientv3.Event{{Type: mvccpb.PUT, Kv: leaseKV(2, 4)}})
	check("kv2's key written again", "10.0.2.0/24 10.0.3.0/24 10.0.4.0/24", 2)

	// A list of the same history (after a compaction, say).
	n, kept = m.listed([]keyState{m.reg.keyState(n1), m.reg.keyState(leaseKV(2, 4))}, 5, false, false)
	if n != 3 || len(kept) != 0 {
		t.Errorf("listed again: %d peers, kept %q; want 3, none (not a new history)", n, kept)
	}
	check("listed again", "10.0.2.0/24 10.0.3.0/24 10.0.4.0/24", 2)

	m.endCarry(m.table.carryGen)
	check("grace over", "10.0.2.0/24 10.0.3.0/24", 2)
	m.stopCarry()
}
