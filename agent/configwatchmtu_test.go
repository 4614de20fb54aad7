package agent

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchBackendMTUAgainstInterfaceNow: the config watch as the
// agent builds it (optionsCheck over the real backends, hostRefuses with the
// interface's MTU now) judges a new vxlan Backend.MTU against the external
// interface's MTU now, as the next start would, and calls one that
// interface cannot carry a config this host cannot run. The agent started
// with eth0 at MTU 1400. Before, the backend's construction judged
// Backend.MTU against that start-time MTU and the watch said "network
// config changed to something invalid": on the namespace cluster, eth0
// raised to 1500 and the key given "MTU":9000, the line said "eth0's MTU
// 1400 … at most 1400"; eth0 raised to 9000, a config a restart runs was
// still "invalid".
func TestConfigWatchBackendMTUAgainstInterfaceNow(t *testing.T) {
	started := backend.ExternalInterface{
		Iface:     &net.Interface{Index: 2, Name: "eth0", MTU: 1400},
		IfaceAddr: netip.MustParseAddr("198.18.0.1"),
		PublicIP:  netip.MustParseAddr("198.18.0.1"),
	}
	running, err := subnet.ParseConfig([]byte(withNetwork(`{"Backend":{"Type":"vxlan"}}`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		nowMTU int
		new    string
		why    string // "" for a config this host can run
	}{
		{9000, `{"Backend":{"Type":"vxlan","MTU":9000}}`, ""},
		{1500, `{"Backend":{"Type":"vxlan","MTU":1500}}`, ""},
		{1500, `{"Backend":{"Type":"vxlan","MTU":9000}}`, `config: "Backend.MTU": 9000 is more than the external interface eth0's MTU 1500: it is the MTU of the encapsulated packets, as in flanneld (the device gets it less the VXLAN overhead); at most 1500 (or 0 for that)`},
	} {
		what := fmt.Sprintf("started at MTU 1400, interface MTU now %d, key rewritten as %s", c.nowMTU, c.new)
		var lines []string
		var pending *ConfigPending
		w := &configWatch{log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}), key: "/k/config", running: running,
			check:   optionsCheck(Backends(), started, t.TempDir()),
			host:    func(cfg *subnet.Config) error { return hostRefuses(cfg, started, c.nowMTU) },
			pending: func(p *ConfigPending) { pending = p }}
		w.judge([]byte(withNetwork(c.new)), true, 1)
		if len(lines) != 1 {
			t.Errorf("%s: logged %q; want one line", what, lines)
			continue
		}
		if pending != nil && pending.Invalid != "" {
			t.Errorf("%s: %s; want no invalid config (configPending.invalid %q)", what, lines[0], pending.Invalid)
			continue
		}
		checkHostVerdict(t, what, lines[0], pending, c.why)
	}

	// The backend's own options are still checked: a VNI no device can
	// have is an invalid config.
	var pending *ConfigPending
	w := &configWatch{log: funcr.New(func(string, string) {}, funcr.Options{}), key: "/k/config", running: running,
		check:   optionsCheck(Backends(), started, t.TempDir()),
		host:    func(cfg *subnet.Config) error { return hostRefuses(cfg, started, 1500) },
		pending: func(p *ConfigPending) { pending = p }}
	w.judge([]byte(withNetwork(`{"Backend":{"Type":"vxlan","VNI":99999999}}`)), true, 1)
	if pending == nil || pending.Invalid == "" {
		t.Errorf("key rewritten with VNI 99999999: configPending %+v; want it invalid", pending)
	}
	if started.Iface.MTU != 1400 {
		t.Errorf("optionsCheck changed the caller's interface: MTU %d, want 1400", started.Iface.MTU)
	}
}
