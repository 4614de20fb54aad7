package agent

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchNextChangeSameVerdict: a config key changed from one
// pending config to another that gets the same verdict (another SubnetMax,
// another VNI after a VNI change) is logged again with its new= and
// /status configPending says the new one; rewritten with the same content
// (or the same Backend with its keys in another case) it is not logged
// again. Before 2026-12-06 the second config was neither logged nor shown:
// the verdict alone was compared (helper 250, on a namespace cluster).
func TestConfigWatchNextChangeSameVerdict(t *testing.T) {
	for _, c := range []struct {
		running, first, second, same string
	}{
		{`{"Backend":{"Type":"host-gw"}}`, `{"SubnetMax":"10.244.100.0","Backend":{"Type":"host-gw"}}`,
			`{"SubnetMax":"10.244.150.0","Backend":{"Type":"host-gw"}}`, `{"SubnetMax":"10.244.150.0","Backend":{"type":"host-gw"}}`},
		{`{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"vxlan","VNI":2}}`,
			`{"Backend":{"Type":"vxlan","VNI":3}}`, `{"Backend":{"Type":"vxlan","vni":3}}`},
	} {
		running, err := subnet.ParseConfig([]byte(withNetwork(c.running)))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		var pending *ConfigPending
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil },
			pending: func(p *ConfigPending) { pending = p }}
		for i, v := range []string{c.first, c.second, c.same} {
			w.judge([]byte(withNetwork(v)), true, int64(i+1))
		}
		second, err := subnet.ParseConfig([]byte(withNetwork(c.second)))
		if err != nil {
			t.Fatal(err)
		}
		if len(lines) != 2 || !strings.Contains(lines[1], "restart agentd to apply it") || !strings.Contains(lines[1], `"revision"=2`) {
			t.Errorf("running %s, key rewritten as %s, %s, %s: logged %q, want 2 lines, the second of revision 2", c.running, c.first, c.second, c.same, lines)
		}
		if pending == nil || pending.New != second.String() || c.running == `{"Backend":{"Type":"vxlan"}}` && !strings.Contains(pending.NewBackend, `"VNI":3`) {
			t.Errorf("running %s, key rewritten as %s, %s: pending %+v, want the second", c.running, c.first, c.second, pending)
		}
	}
}
