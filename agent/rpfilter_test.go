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
// namespace cluster at rp_filter 1, none at 0). The kernel uses the larger
// of all's and the interface's value. Loose (2) or off (0) says nothing of
// it, nor does a change of anything else. Before 2026-12-06 nothing said it.
func TestDirectRoutingChangeSaysStrictRPFilter(t *testing.T) {
	for _, tc := range []struct {
		all, iface int
		strict     bool
	}{{0, 0, false}, {1, 0, true}, {0, 1, true}, {2, 1, false}, {1, 2, false}, {1, 1, true}, {2, 2, false}} {
		procSys := t.TempDir()
		for name, v := range map[string]int{"all": tc.all, "eth0": tc.iface} {
			dir := filepath.Join(procSys, "net/ipv4/conf", name)
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "rp_filter"), []byte(strconv.Itoa(v)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		note := strictRPFilterNote(procSys, "eth0")
		if (note != "") != tc.strict || tc.strict && !strings.Contains(note, "rp_filter 1 on eth0") {
			t.Errorf("all %d, eth0 %d: note %q, want one: %v", tc.all, tc.iface, note, tc.strict)
		}
	}
	if note := strictRPFilterNote(t.TempDir(), "eth0"); note != "" {
		t.Errorf("no rp_filter files: note %q, want none", note)
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
			directRouting: func() string { return note }}
		w.judge([]byte(withNetwork(c.value)), true, 1)
		if len(lines) != 1 || !strings.Contains(lines[0], "restart agentd to apply it") || strings.Contains(lines[0], note) != c.note {
			t.Errorf("running vxlan, key rewritten as %s: logged %q, want one line asking for a restart, with the note: %v", c.value, lines, c.note)
		}
	}
}
