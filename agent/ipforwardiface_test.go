package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

// TestIPForwardCheckInterfaces: the kernel forwards a packet when the
// interface it arrives on forwards (net.ipv4.conf.<iface>.forwarding), not
// as net.ipv4.ip_forward says (seen in a namespace router: ip_forward 1
// with either interface at 0 forwards neither way; 0 with both at 1
// forwards). Once the interfaces are known, /status says which is at 0
// and how to set it, and agentd_ipv4_forwarding has a series for each and
// for "all"; ip_forward at 0 with every interface at 1 is on. Before, only
// ip_forward was read, and a cni0 at 0 went unsaid. A change of what is
// off after the line is logged too, a grace after the last line
// (TestIPForwardCheckSaysNewCause).
func TestIPForwardCheckInterfaces(t *testing.T) {
	procSys := t.TempDir()
	write := func(rel, v string) {
		t.Helper()
		p := filepath.Join(procSys, rel)
		if v == "" {
			if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			return
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	o := newObserver()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var status string
	c := newIPForwardCheck(procSys, log, func(s string) { status = s })
	c.values = o.ipForwarding
	c.now = func() time.Time { return now }
	c.ifaces = func() []fwdIface {
		return []fwdIface{{"flannel.1", "the overlay's vxlan device, where other hosts' packets arrive"}, {"cni0", "the containers' bridge, where their packets arrive"}}
	}
	const ipfwd = "sysctl -w net.ipv4.ip_forward=1"
	for i, step := range []struct {
		all, vx, cni string // "" removes the file
		after        time.Duration
		status       []string // what /status's ipForwardingOff says; nil: empty
		said         string   // what the check logs, "" nothing
		metrics      string
	}{
		{all: "1", vx: "1", cni: "1", metrics: `all 1, cni0 1, flannel.1 1`},
		{all: "1", vx: "1", cni: "0", status: []string{
			"net.ipv4.conf.cni0.forwarding=0 although net.ipv4.ip_forward is 1",
			"no packet that arrives on cni0 (the containers' bridge, where their packets arrive)",
			"sysctl -w net.ipv4.conf.cni0.forwarding=1"}, metrics: `all 1, cni0 0, flannel.1 1`},
		{all: "1", vx: "1", cni: "0", after: time.Minute, status: []string{"net.ipv4.conf.cni0.forwarding=0"},
			said: `"msg"="IPv4 FORWARDING IS OFF on cni0: net.ipv4.conf.cni0.forwarding=0`, metrics: `all 1, cni0 0, flannel.1 1`},
		{all: "1", vx: "0", cni: "0", status: []string{
			"net.ipv4.conf.flannel.1.forwarding=0, net.ipv4.conf.cni0.forwarding=0 although",
			"sysctl -w net.ipv4.conf.flannel.1.forwarding=1; sysctl -w net.ipv4.conf.cni0.forwarding=1"}, metrics: `all 1, cni0 0, flannel.1 0`},
		// What is off changed after the line: the new cause is logged a
		// grace after the last line, not never (before, the line about
		// cni0 alone stayed the log's last word until it was on again).
		{all: "1", vx: "0", cni: "0", after: 30 * time.Second, status: []string{"net.ipv4.conf.flannel.1.forwarding=0"}, metrics: `all 1, cni0 0, flannel.1 0`},
		{all: "1", vx: "0", cni: "0", after: 30 * time.Second, status: []string{"net.ipv4.conf.flannel.1.forwarding=0"},
			said: `"msg"="IPv4 FORWARDING IS OFF on flannel.1 and cni0: net.ipv4.conf.flannel.1.forwarding=0, net.ipv4.conf.cni0.forwarding=0`, metrics: `all 1, cni0 0, flannel.1 0`},
		{all: "1", vx: "0", cni: "0", after: time.Hour, status: []string{"net.ipv4.conf.flannel.1.forwarding=0"}, metrics: `all 1, cni0 0, flannel.1 0`},
		{all: "1", vx: "1", cni: "1", said: `"msg"="IPv4 forwarding is on again`, metrics: `all 1, cni0 1, flannel.1 1`},
		// ip_forward 0 with both interfaces at 1 forwards.
		{all: "0", vx: "1", cni: "1", metrics: `all 0, cni0 1, flannel.1 1`},
		{all: "0", vx: "1", cni: "0", status: []string{ipfwd}, metrics: `all 0, cni0 0, flannel.1 1`},
		// No bridge yet (gone meanwhile): the device decides.
		{all: "0", vx: "0", cni: "", status: []string{ipfwd}, metrics: `all 0, flannel.1 0`},
		{all: "1", vx: "1", cni: "", metrics: `all 1, flannel.1 1`},
		// No interface readable: ip_forward alone decides.
		{all: "0", status: []string{ipfwd}, metrics: `all 0`},
	} {
		write("net/ipv4/ip_forward", step.all)
		write("net/ipv4/conf/flannel.1/forwarding", step.vx)
		write("net/ipv4/conf/cni0/forwarding", step.cni)
		now = now.Add(step.after)
		lines = nil
		c.check(true)
		st := status
		if (st == "") != (step.status == nil) {
			t.Errorf("step %d (all %s, flannel.1 %s, cni0 %s): /status ipForwardingOff %q, want it saying %q", i, step.all, step.vx, step.cni, st, step.status)
		}
		for _, w := range step.status {
			if !strings.Contains(st, w) {
				t.Errorf("step %d: /status ipForwardingOff %q\ndoes not say %q", i, st, w)
			}
		}
		if step.said == "" && len(lines) != 0 || step.said != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.said)) {
			t.Errorf("step %d: logged %q, want %q", i, lines, step.said)
		}
		if got := forwardingSeries(t, o); got != step.metrics {
			t.Errorf("step %d: agentd_ipv4_forwarding %q, want %q", i, got, step.metrics)
		}
	}
}

// forwardingSeries is agentd_ipv4_forwarding's series as o's registry
// gathers them: "all 1, cni0 0", by interface.
func forwardingSeries(t *testing.T, o *observer) string {
	t.Helper()
	mfs, err := o.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "agentd_ipv4_forwarding" {
			continue
		}
		if mf.GetHelp() != ipForwardingHelp {
			t.Errorf("help %q", mf.GetHelp())
		}
		for _, m := range mf.GetMetric() {
			got = append(got, fmt.Sprintf("%s %g", m.GetLabel()[0].GetValue(), m.GetGauge().GetValue()))
		}
	}
	slices.Sort(got)
	return strings.Join(got, ", ")
}
