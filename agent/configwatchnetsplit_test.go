package agent

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchNetworkSplitsCluster: a running agent asked to restart for
// another Network (larger, smaller or moved) says that hosts on the old and
// the new one do not all reach each other, naming Network as incompatible,
// in the log line and in /status configPending: every agent skips the leases
// outside the Network it started with (Config.RoutableLease), so a host
// restarted alone that leases outside the old Network (a larger one is
// written when the old is full) is cut off from every host not yet
// restarted, and the reverse for a smaller or moved one. Another SubnetLen
// (every host routes leases of either length) or pool says nothing of the
// kind. Before, a Network change got the plain "restart agentd to apply it",
// which invites a restart host by host.
func TestConfigWatchNetworkSplitsCluster(t *testing.T) {
	const split = "hosts on the old and the new Network do not all reach each other (each agent skips the leases outside the Network it started with): restart every host's agentd together, not one at a time"
	const running = `{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}`
	for _, c := range []struct {
		value, key string // key: the incompatible one, "" for none
	}{
		{`{"Network":"10.244.0.0/15","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0/17","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.96.0.0/16","Backend":{"Type":"vxlan"}}`, "Network"},
		{`{"Network":"10.244.0.0/15","Backend":{"Type":"host-gw"}}`, "Backend.Type"},
		{`{"Network":"10.244.0.0/16","SubnetLen":25,"Backend":{"Type":"vxlan"}}`, ""},
		{`{"Network":"10.244.0.0/16","SubnetMax":"10.244.9.0","Backend":{"Type":"vxlan"}}`, ""},
	} {
		run, err := subnet.ParseConfig([]byte(running))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		o := newObserver()
		w := &configWatch{log: log, key: "/k/config", running: run,
			check: func(*subnet.Config) error { return nil }, pending: o.configPending}
		w.judge([]byte(c.value), true, 1)
		if len(lines) != 1 || !strings.Contains(lines[0], "restart agentd to apply it") {
			t.Errorf("key rewritten as %s: logged %q, want one line asking for a restart", c.value, lines)
			continue
		}
		l := lines[0]
		p := o.status(newHealth(log)).ConfigPending
		switch {
		case p == nil:
			t.Errorf("key rewritten as %s: no configPending", c.value)
		case c.key == "" && (strings.Contains(l, "together") || strings.Contains(l, `"incompatible"`) || p.Incompatible != ""):
			t.Errorf("key rewritten as %s: %s (incompatible %q)\nsays hosts must restart together; they may restart one at a time", c.value, l, p.Incompatible)
		case c.key == "Network" && (!strings.Contains(l, split) || !strings.Contains(l, `"incompatible"="Network"`) || p.Incompatible != "Network"):
			t.Errorf("key rewritten as %s: %s (configPending incompatible %q)\nwant %q and incompatible=Network", c.value, l, p.Incompatible, split)
		case c.key != "" && p.Incompatible != c.key:
			t.Errorf("key rewritten as %s: configPending incompatible %q, want %q", c.value, p.Incompatible, c.key)
		}
	}
}
