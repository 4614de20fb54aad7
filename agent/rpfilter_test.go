package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestDirectRoutingChangeSaysStrictRPFilter: a change of vxlan's
// DirectRouting, which hosts may roll one at a time, says on a host that
// filters by reverse path strictly that traffic between hosts on the old
// and the new setting is dropped there until all run the same: a host on
// one setting sends straight through the interface, and the route back on
// the other is through flannel.1 (helper 248 saw 100 % loss on the
// namespace cluster at rp_filter 1, none at 0), and the answer comes in
// decapsulated on flannel.<VNI> where the route back is direct, which strict
// filtering there drops too (helper 258). The kernel uses the larger of
// all's and the interface's value. Loose (2) or off (0) says nothing of
// it, nor does a change of anything else. Before 2026-12-06 nothing said it.
func TestDirectRoutingChangeSaysStrictRPFilter(t *testing.T) {
	for _, tc := range []struct {
		all, iface, dev int
		strict          string // the interfaces named, "" for no note
	}{
		{0, 0, 0, ""}, {1, 0, 0, "eth0 and flannel.1"}, {0, 1, 0, "eth0"}, {0, 0, 1, "flannel.1"}, {2, 1, 1, ""},
		{1, 2, 0, "flannel.1"}, {1, 1, 1, "eth0 and flannel.1"}, {2, 2, 2, ""},
	} {
		procSys := t.TempDir()
		for name, v := range map[string]int{"all": tc.all, "eth0": tc.iface, "flannel.1": tc.dev} {
			dir := filepath.Join(procSys, "net/ipv4/conf", name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "rp_filter"), []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		note := strictRPFilterNote(procSys, "eth0", "flannel.1")
		if (note != "") != (tc.strict != "") || tc.strict != "" && !strings.Contains(note, "(rp_filter 1 on "+tc.strict+")") {
			t.Errorf("all %d, eth0 %d, flannel.1 %d: note %q, want one naming %q", tc.all, tc.iface, tc.dev, note, tc.strict)
		}
	}
	if note := strictRPFilterNote(t.TempDir(), "eth0", "flannel.1"); note != "" {
		t.Errorf("no rp_filter files: note %q, want none", note)
	}
	running0, err := subnet.ParseConfig([]byte(withNetwork(`{"Backend":{"Type":"vxlan","VNI":7}}`)))
	if err != nil {
		t.Fatal(err)
	}
	if dev := vxlanDevice(running0); dev != "flannel.7" {
		t.Errorf("vxlanDevice of VNI 7: %q, want flannel.7", dev)
	}

	const note = "NOTE"
	running, err := subnet.ParseConfig([]byte(withNetwork(`{"Backend":{"Type":"vxlan"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		value string
		note  bool
	}{
		{`{"Backend":{"Type":"vxlan","DirectRouting":true}}`, true},
		{`{"Backend":{"Type":"vxlan","DirectRouting":true,"MTU":1400}}`, true},
		{`{"Backend":{"Type":"vxlan","MTU":1400}}`, false},
		{`{"SubnetLen":25,"Backend":{"Type":"vxlan"}}`, false},
		{`{"Backend":{"Type":"host-gw"}}`, false},
	} {
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil },
			directRouting: func(*subnet.Config) string { return note }}
		w.judge([]byte(withNetwork(c.value)), true, 1)
		if len(lines) != 1 || !strings.Contains(lines[0], "restart agentd to apply it") || strings.Contains(lines[0], note) != c.note {
			t.Errorf("running vxlan, key rewritten as %s: logged %q, want one line asking for a restart, with the note: %v", c.value, lines, c.note)
		}
	}
}
