package agent

import (
	"strings"
	"testing"

	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchBackendSplitsCluster: a running agent asked to restart for
// a new backend Type, or vxlan VNI or Port, says that hosts on the old and
// the new one do not reach each other, so the agents must restart
// together: restarted one at a time, as "restart agentd to apply it" alone
// invites, each restarted host is cut off from every host not yet restarted
// (TestBackendSwitchRolling measures it). A change hosts may roll through
// (vxlan's MTU or DirectRouting, the subnet pool, and since 2026-12-06
// udp's Port, which each lease says: TestPortChangeRolling) says nothing of
// the kind; for udp's Port it says the hosts that still split (flanneld,
// older agentd). Before, every change got the same line, without
// incompatible=.
func TestConfigWatchBackendSplitsCluster(t *testing.T) {
	const split = "restart every host's agentd together, not one at a time"
	for _, c := range []struct {
		running, value, key string // key: the incompatible one, "" for none
	}{
		{`{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"host-gw"}}`, "Backend.Type"},
		{`{"Backend":{"Type":"host-gw"}}`, `{"Backend":{"Type":"udp"}}`, "Backend.Type"},
		{`{"Backend":{"Type":"udp"}}`, `{"Backend":{}}`, "Backend.Type"}, // vxlan by default
		{`{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"vxlan","VNI":2}}`, "Backend.VNI"},
		{`{"Backend":{"Type":"vxlan","VNI":2}}`, `{"Backend":{"Type":"vxlan","VNI":2,"Port":4789}}`, "Backend.Port"},
		// udp sends to the port each lease says (since 2026-12-06).
		{`{"Backend":{"Type":"udp"}}`, `{"Backend":{"Type":"udp","Port":8286}}`, ""},
		{`{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"vxlan","DirectRouting":true}}`, ""},
		{`{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"vxlan","MTU":1400}}`, ""},
		{`{"Backend":{"Type":"vxlan","VNI":2}}`, `{"SubnetLen":25,"Backend":{"Type":"vxlan","VNI":2}}`, ""},
		{`{"Backend":{"Type":"host-gw"}}`, `{"SubnetMin":"10.244.8.0","Backend":{"Type":"host-gw"}}`, ""},
	} {
		running, err := subnet.ParseConfig([]byte(withNetwork(c.running)))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil }}
		w.judge([]byte(withNetwork(c.value)), true, 1)
		if len(lines) != 1 || !strings.Contains(lines[0], "restart agentd to apply it") {
			t.Errorf("running %s, key rewritten as %s: logged %q, want one line asking for a restart", c.running, c.value, lines)
			continue
		}
		l := lines[0]
		switch {
		case c.key == "" && (strings.Contains(l, split) || strings.Contains(l, `"incompatible"`)):
			t.Errorf("running %s, key rewritten as %s: %s\nsays hosts must restart together; they may restart one at a time", c.running, c.value, l)
		case c.key != "" && (!strings.Contains(l, split) || !strings.Contains(l, `"incompatible"="`+c.key+`"`)):
			t.Errorf("running %s, key rewritten as %s: %s\nwant %q and incompatible=%q", c.running, c.value, l, split, c.key)
		case strings.Contains(c.value, `"udp","Port"`) && !strings.Contains(l, "flanneld hosts, and agentd hosts from before 2026-12-06, send to their own config's Port"):
			t.Errorf("running %s, key rewritten as %s: %s\nwant the hosts that still split named", c.running, c.value, l)
		}
	}
}

// withNetwork puts "Network" into a config object written without it.
func withNetwork(config string) string {
	return `{"Network":"10.244.0.0/16",` + strings.TrimPrefix(config, "{")
}

// TestConfigWatchBackendNoSplitHidesNothing: a backend change that splits
// nothing (vxlan's VNI with DirectRouting and every peer on this host's
// segment; udp's Port) made together with a change that does (Network,
// EnableIPv6 off, IPv6Network) is judged by the latter: incompatible names
// it, and the line says why. Before, the backend's verdict was the only one
// judged, and such a change said "may restart on its own", no incompatible.
func TestConfigWatchBackendNoSplitHidesNothing(t *testing.T) {
	const (
		dr    = `"Backend":{"Type":"vxlan","DirectRouting":true}`
		dr2   = `"Backend":{"Type":"vxlan","DirectRouting":true,"VNI":2}`
		udp   = `"Backend":{"Type":"udp"}`
		udp2  = `"Backend":{"Type":"udp","Port":8286}`
		dual  = `"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56",`
		dual2 = `"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:245::/56",`
	)
	for _, c := range []struct {
		running, value, key, note string
	}{
		{`{"Network":"10.244.0.0/16",` + dr + `}`, `{"Network":"10.245.0.0/16",` + dr2 + `}`, "Network", networkSplit},
		{`{"Network":"10.244.0.0/16",` + udp + `}`, `{"Network":"10.245.0.0/16",` + udp2 + `}`, "Network", networkSplit},
		{`{` + dual + dr + `}`, `{"Network":"10.244.0.0/16",` + dr2 + `}`, "EnableIPv6", ipv6SplitNotes["EnableIPv6"]},
		{`{` + dual + udp + `}`, `{` + dual2 + udp2 + `}`, "IPv6Network", ipv6SplitNotes["IPv6Network"]},
		// Nothing else splits: the backend's verdict, and what else matters.
		{`{"Network":"10.244.0.0/16",` + dr + `}`, `{"Network":"10.244.0.0/16","SubnetLen":25,` + dr2 + `}`, "", "may restart on its own"},
		{`{"Network":"10.244.0.0/16",` + udp + `}`, `{` + dual + udp2 + `}`, "", udpPortNote + "; " + ipv6OnNote},
	} {
		running, err := subnet.ParseConfig([]byte(c.running))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
		var got *ConfigPending
		w := &configWatch{log: log, key: "/k/config", running: running, check: func(*subnet.Config) error { return nil },
			direct:  func(*subnet.Config) (directCount, bool) { return directCount{direct: 3, total: 3}, true },
			pending: func(p *ConfigPending) { got = p }}
		w.judge([]byte(c.value), true, 1)
		if got == nil || got.Incompatible != c.key || !strings.Contains(got.Note, c.note) || len(lines) != 1 || !strings.Contains(lines[0], c.note) {
			t.Errorf("running %s, key rewritten as %s: configPending %+v, logged %q; want incompatible=%q and %q", c.running, c.value, got, lines, c.key, c.note)
		}
	}
}
