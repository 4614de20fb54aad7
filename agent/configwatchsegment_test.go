package agent

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchSegmentChanged: after an event about this host's segment
// (followSegment), a pending VNI change under DirectRouting is judged again
// when the segment puts another number of the same peers on it, in one line
// with judgedAgain="this host's segment changed"; an event that changes no
// count logs nothing, and other peers than those the verdict counted are
// left to peersSeen, which says the peers changed. Before 2026-12-06 a
// change of the segment was judged only at the next change of the key or
// the peers (TestDirectSplitFollowsSegment shows it in a namespace).
func TestConfigWatchSegmentChanged(t *testing.T) {
	a, b, c := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.19.0.7"), netip.MustParseAddr("198.18.0.3")
	cur := directCount{direct: 1, total: 2, peers: []netip.Addr{a, b}}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	var got *ConfigPending
	w := &configWatch{log: log, key: "/k/config", running: mustParseConfig(t, directSplitConfig),
		check:   func(*subnet.Config) error { return nil },
		direct:  func(*subnet.Config) (directCount, bool) { return cur, true },
		pending: func(p *ConfigPending) { got = p }}
	const segment, peers = `"judgedAgain"="this host's segment changed"`, `"judgedAgain"="this host's peers changed"`
	// step checks that n lines were logged by now, the last holding
	// judged, and configPending's incompatible.
	step := func(what string, n int, judged, incompatible string) {
		t.Helper()
		switch {
		case len(lines) != n:
			t.Fatalf("%s: %d lines, want %d:\n%s", what, len(lines), n, strings.Join(lines, "\n"))
		case judged != "" && !strings.Contains(lines[n-1], judged):
			t.Fatalf("%s: logged %s\nwant %s", what, lines[n-1], judged)
		case got == nil || got.Incompatible != incompatible:
			t.Fatalf("%s: configPending %+v, want incompatible %q", what, got, incompatible)
		}
	}

	w.segmentChanged()
	if len(lines) != 0 || got != nil {
		t.Fatalf("segment event with no verdict pending: logged %q, configPending %+v", lines, got)
	}
	w.judge([]byte(directSplitVNI2), true, 1)
	step("VNI 2, a peer off the segment", 1, "", "Backend.VNI")

	w.segmentChanged()
	step("a segment event that changes no count", 1, "", "Backend.VNI")

	cur = directCount{direct: 2, total: 2, peers: []netip.Addr{a, b}}
	w.segmentChanged()
	step("the segment now holds both peers", 2, segment, "")

	cur = directCount{direct: 2, total: 3, peers: []netip.Addr{a, c, b}}
	w.segmentChanged()
	step("a segment event with a peer not yet seen", 2, "", "")
	w.peersSeen([]subnet.Lease{
		{Subnet: netip.MustParsePrefix("10.244.2.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: a}},
		{Subnet: netip.MustParsePrefix("10.244.3.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: c}},
		{Subnet: netip.MustParsePrefix("10.244.4.0/24"), Attrs: subnet.LeaseAttrs{PublicIP: b}},
	})
	step("the reconcile loop's snapshot with that peer", 3, peers, "Backend.VNI")
}
