package agent

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
)

// TestConfigWatchPending: while the config key holds something other than
// the running config, /status configPending and agentd_network_config_pending
// say so, what differs, since when, and whether it splits the cluster, for
// as long as it lasts, not just in the one log line, which is long gone when
// a host reboots alone days later into the new config (for a backend
// change: cut off from every other host). They are cleared when the key
// means the running config again. Since stays across changes that still
// differ. Before, only the log line said it.
func TestConfigWatchPending(t *testing.T) {
	running, err := subnet.ParseConfig([]byte(withNetwork(`{"Backend":{"Type":"vxlan"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	o := newObserver()
	h := newHealth(funcr.New(func(string, string) {}, funcr.Options{}))
	clock := time.Date(2026, 12, 6, 5, 0, 0, 0, time.UTC)
	w := &configWatch{log: funcr.New(func(string, string) {}, funcr.Options{}), key: "/k/config", running: running,
		check: func(*subnet.Config) error { return nil }, pending: o.configPending, now: func() time.Time { return clock }}
	first := clock
	for i, s := range []struct {
		value   string         // "" deletes the key
		want    *ConfigPending // Running is filled in, and New if set
		metric  float64
		labels  string // incompatible,host_can_run
		advance time.Duration
	}{
		{withNetwork(`{"Backend":{"Type":"vxlan"}}`), nil, 0, ",true", 0},
		{withNetwork(`{"Backend":{"Type":"host-gw"}}`), &ConfigPending{Since: first, Incompatible: "Backend.Type", Changed: "Backend", Note: backendSplit,
			New: "(the key's)", RunningBackend: `{"Type":"vxlan"}`, NewBackend: `{"Type":"host-gw"}`}, 1, "Backend.Type,true", time.Hour},
		// Another change that still differs keeps Since.
		{withNetwork(`{"Backend":{"Type":"vxlan","MTU":1400}}`), &ConfigPending{Since: first, Changed: "Backend",
			New: "(the key's)", RunningBackend: `{"Type":"vxlan"}`, NewBackend: `{"Type":"vxlan","MTU":1400}`}, 1, ",true", time.Hour},
		{"", &ConfigPending{Since: first, Deleted: true}, 1, ",false", time.Hour},
		{withNetwork(`{"SubnetLen":31}`), &ConfigPending{Since: first, Invalid: `config: "SubnetLen": 31 is longer than /30`}, 1, ",false", time.Hour},
		{withNetwork(`{"Backend":{"Type":"vxlan"}}`), nil, 0, ",true", time.Hour},
		// Pending again: since now.
		{withNetwork(`{"SubnetLen":25,"Backend":{"Type":"vxlan"}}`), &ConfigPending{Since: first.Add(5 * time.Hour),
			New: "(the key's)", Changed: "SubnetLen,SubnetMin,SubnetMax"}, 1, ",true", 0},
	} {
		w.judge([]byte(s.value), s.value != "", int64(i+1))
		clock = clock.Add(s.advance)
		got := o.status(h).ConfigPending
		if s.want != nil {
			s.want.Running = running.String()
			if s.want.New != "" {
				c, err := subnet.ParseConfig([]byte(s.value))
				if err != nil {
					t.Fatal(err)
				}
				s.want.New = c.String()
			}
		}
		switch {
		case s.want == nil && got != nil:
			t.Errorf("step %d %s: configPending %+v, want none", i, s.value, *got)
		case s.want != nil && (got == nil || *got != *s.want):
			t.Errorf("step %d %s: configPending %+v, want %+v", i, s.value, got, *s.want)
		}
		if v, labels := pendingMetric(t, o); v != s.metric || labels != s.labels {
			t.Errorf("step %d %s: agentd_network_config_pending{%s} %v, want {%s} %v", i, s.value, labels, v, s.labels, s.metric)
		}
	}
}

// pendingMetric is agentd_network_config_pending's one series: its value
// and its labels incompatible and host_can_run, comma-separated.
func pendingMetric(t *testing.T, o *observer) (float64, string) {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "agentd_network_config_pending" {
			continue
		}
		if len(mf.Metric) != 1 {
			t.Fatalf("agentd_network_config_pending has %d series, want 1", len(mf.Metric))
		}
		m := mf.Metric[0]
		return m.GetGauge().GetValue(), label(m, "incompatible") + "," + label(m, "host_can_run")
	}
	t.Fatal("no agentd_network_config_pending")
	return 0, ""
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return "(none)"
}

// TestConfigWatchHostCannotRun: a config this host's start would refuse
// once the backend is built is said to be one this host cannot run, with
// the start's reason, in the log line and in configPending, and the line
// does not invite a restart: on a host whose --public-ip is not its
// interface's address (behind NAT), host-gw; with vxlan, a Backend.MTU
// above the external interface's. Before, both were "restart agentd to
// apply it", and every restart then failed (systemd restarting the agent
// every 5 s). The same configs on a host that can run them are plain
// changes.
func TestConfigWatchHostCannotRun(t *testing.T) {
	eth0 := &net.Interface{Index: 2, Name: "eth0", MTU: 1500}
	nat := backend.ExternalInterface{Iface: eth0, IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.19.0.1")}
	direct := backend.ExternalInterface{Iface: eth0, IfaceAddr: netip.MustParseAddr("198.18.0.1"), PublicIP: netip.MustParseAddr("198.18.0.1")}
	// host-gw reads the interface's addresses as the kernel has them.
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	onLo := backend.ExternalInterface{Iface: &net.Interface{Index: lo.Index, Name: lo.Name, MTU: eth0.MTU}, IfaceAddr: netip.MustParseAddr("127.0.0.1"), PublicIP: netip.MustParseAddr("127.0.0.1")}
	const cannot = "network config changed to one this host cannot run"
	for _, c := range []struct {
		ext          backend.ExternalInterface
		running, new string
		why          string // "" for a config this host can run
	}{
		{nat, `{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"host-gw"}}`, "host-gw cannot work behind NAT: the public IP 198.19.0.1 is not eth0's address 198.18.0.1"},
		{onLo, `{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"host-gw"}}`, ""},
		{nat, `{"Backend":{"Type":"host-gw"}}`, `{"Backend":{"Type":"udp"}}`, ""},
		{direct, `{"Backend":{"Type":"vxlan"}}`, `{"Backend":{"Type":"vxlan","MTU":9000}}`, `config: "Backend.MTU": 9000 is more than the external interface eth0's MTU 1500`},
		{nat, `{"Backend":{"Type":"host-gw"}}`, `{"Backend":{"Type":"vxlan","MTU":1500}}`, ""},
	} {
		running, err := subnet.ParseConfig([]byte(withNetwork(c.running)))
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		var pending *ConfigPending
		w := &configWatch{log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}), key: "/k/config", running: running,
			check:   func(*subnet.Config) error { return nil },
			host:    func(cfg *subnet.Config) error { return hostRefuses(cfg, c.ext, eth0.MTU) },
			pending: func(p *ConfigPending) { pending = p }}
		w.judge([]byte(withNetwork(c.new)), true, 1)
		if len(lines) != 1 || pending == nil {
			t.Errorf("public IP %s, running %s, key rewritten as %s: logged %q, configPending %+v; want one line and configPending", c.ext.PublicIP, c.running, c.new, lines, pending)
			continue
		}
		l := lines[0]
		switch {
		case c.why == "" && (strings.Contains(l, cannot) || pending.HostCannotRun != ""):
			t.Errorf("public IP %s, running %s, key rewritten as %s: %s, hostCannotRun %q; want a plain change", c.ext.PublicIP, c.running, c.new, l, pending.HostCannotRun)
		case c.why == "" && !strings.Contains(l, "restart agentd to apply it"):
			t.Errorf("public IP %s, running %s, key rewritten as %s: %s; want restart agentd to apply it", c.ext.PublicIP, c.running, c.new, l)
		case c.why != "" && (!strings.Contains(l, cannot) || !strings.Contains(l, strings.ReplaceAll(c.why, `"`, `\"`)) || strings.Contains(l, "restart agentd to apply it")):
			t.Errorf("public IP %s, running %s, key rewritten as %s:\n%s\nwant %q with %q, without restart agentd to apply it", c.ext.PublicIP, c.running, c.new, l, cannot, c.why)
		case c.why != "" && !strings.HasPrefix(pending.HostCannotRun, c.why):
			t.Errorf("public IP %s, running %s, key rewritten as %s: hostCannotRun %q, want %q", c.ext.PublicIP, c.running, c.new, pending.HostCannotRun, c.why)
		}
	}
}
