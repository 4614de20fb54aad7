package agent

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/agentd/agentd/backend"
	"github.com/agentd/agentd/subnet"
	"github.com/go-logr/logr/funcr"
)

// TestConfigWatchHostCannotRunChecks: the config watch asks every start
// check of this host that a backend's Prepare makes and that can be asked
// without touching the running datapath, not only host-gw behind NAT and a
// vxlan Backend.MTU above the interface's: an external interface whose MTU
// leaves less than 68 bytes once vxlan's 50 or udp's 28 are taken off; a
// udp Port another process holds (this one holds it while it runs the udp
// backend: the next start takes its sockets over); a host-gw public IP that
// the interface does not have. Before, each of these was "restart agentd to
// apply it", and every restart then failed. The same configs on a host that
// can run them are plain changes.
func TestConfigWatchHostCannotRunChecks(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	onLo := func(addr string) backend.ExternalInterface {
		a := netip.MustParseAddr(addr)
		return backend.ExternalInterface{Iface: lo, IfaceAddr: a, PublicIP: a}
	}
	held, holder := holdUDPPort(t)
	own, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	ownPort := own.LocalAddr().(*net.UDPAddr).Port

	const vx = `{"Backend":{"Type":"vxlan"}}`
	for _, c := range []struct {
		ext          backend.ExternalInterface
		mtu          int
		running, new string
		why          string // "" for a config this host can run
	}{
		{onLo("127.0.0.1"), 117, `{"Backend":{"Type":"host-gw"}}`, vx, "external interface lo has MTU 117, too small for VXLAN"},
		{onLo("127.0.0.1"), 118, `{"Backend":{"Type":"host-gw"}}`, vx, ""},
		{onLo("127.0.0.1"), 95, vx, `{"Backend":{"Type":"udp"}}`, "external interface lo has MTU 95, too small for UDP encapsulation"},
		{onLo("127.0.0.1"), 96, vx, `{"Backend":{"Type":"udp"}}`, ""},
		{onLo("127.0.0.1"), 1500, vx, fmt.Sprintf(`{"Backend":{"Type":"udp","Port":%d}}`, held),
			fmt.Sprintf("bind UDP 127.0.0.1:%d: address already in use (held by cat (pid %d): it is no descriptor keeper of agentd's: stop it (kill %[2]d))", held, holder)},
		{onLo("127.0.0.1"), 1500, `{"Backend":{"Type":"udp"}}`, fmt.Sprintf(`{"Backend":{"Type":"udp","Port":%d}}`, ownPort), ""},
		{onLo("127.0.0.2"), 1500, vx, `{"Backend":{"Type":"host-gw"}}`,
			"host-gw cannot work behind NAT: the public IP 127.0.0.2 is not an address of lo (it has 127.0.0.1/8); peers route to the public IP as a gateway on their own segment"},
		{onLo("127.0.0.1"), 1500, vx, `{"Backend":{"Type":"host-gw"}}`, ""},
	} {
		line, pending := judgeOnHost(t, c.ext, c.mtu, c.running, c.new)
		checkHostVerdict(t, fmt.Sprintf("interface MTU %d, address %s, running %s, key rewritten as %s", c.mtu, c.ext.IfaceAddr, c.running, c.new), line, pending, c.why)
	}
}

// holdUDPPort has a child process (cat, until the test ends) hold a UDP
// socket on 127.0.0.1, and returns its port and the child's pid.
func holdUDPPort(t *testing.T) (port, pid int) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port = conn.LocalAddr().(*net.UDPAddr).Port
	f, err := conn.File()
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cat")
	cmd.Stdin, cmd.ExtraFiles = stdin, []*os.File{f}
	err = cmd.Start()
	stdin.Close()
	if err != nil {
		w.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Close() // cat exits at the end of its input
		if err := cmd.Wait(); err != nil {
			t.Errorf("cat holding UDP port %d: %v", port, err)
		}
	})
	return port, cmd.Process.Pid
}

// judgeOnHost has a config watch running config running, on a host whose
// external interface is ext with MTU mtu, judge the key rewritten as
// config next, and returns the line it logged (if it logged one) and what
// it told pending.
func judgeOnHost(t *testing.T, ext backend.ExternalInterface, mtu int, running, next string) (string, *ConfigPending) {
	t.Helper()
	rc, err := subnet.ParseConfig([]byte(withNetwork(running)))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	var pending *ConfigPending
	w := &configWatch{log: funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{}), key: "/k/config", running: rc,
		check:   func(*subnet.Config) error { return nil },
		host:    func(cfg *subnet.Config) error { return hostRefuses(cfg, ext, mtu) },
		pending: func(p *ConfigPending) { pending = p }}
	w.judge([]byte(withNetwork(next)), true, 1)
	if len(lines) != 1 {
		t.Errorf("running %s, key rewritten as %s: logged %q, want one line", running, next, lines)
		return "", pending
	}
	return lines[0], pending
}

// checkHostVerdict checks that line and pending say a config this host
// cannot run, for reason why, without inviting a restart; or, why "", a
// plain change to restart for.
func checkHostVerdict(t *testing.T, what, line string, pending *ConfigPending, why string) {
	t.Helper()
	const cannot = "network config changed to one this host cannot run"
	switch {
	case pending == nil:
		t.Errorf("%s: no configPending", what)
	case why == "" && (strings.Contains(line, cannot) || pending.HostCannotRun != ""):
		t.Errorf("%s: %s, hostCannotRun %q; want a plain change", what, line, pending.HostCannotRun)
	case why == "" && !strings.Contains(line, "restart agentd to apply it"):
		t.Errorf("%s: %s; want restart agentd to apply it", what, line)
	case why != "" && (!strings.Contains(line, cannot) || !strings.Contains(line, strings.ReplaceAll(why, `"`, `\"`)) || strings.Contains(line, "restart agentd to apply it")):
		t.Errorf("%s:\n%s\nwant %q with %q, without restart agentd to apply it", what, line, cannot, why)
	case why != "" && pending.HostCannotRun != why:
		t.Errorf("%s: hostCannotRun %q, want %q", what, pending.HostCannotRun, why)
	}
}
