package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

// TestIPForwardCheckSaysNewCause: once the off line is logged, what is off
// may change while the host stays off: the operator sets
// net.ipv4.ip_forward=1 after the line about it, and a network manager (or
// a sysctl.d file) has cni0's own forwarding at 0. Before 2026-12-06
// nothing more was logged until every interface forwarded, so the log's
// last line went on saying ip_forward=0 while it was 1. Now the new cause
// is logged once at error level, and again only when it changes, off
// lines a grace (a minute) apart at least: a value that flaps every pass
// gives a line a minute, not a line a pass. Going back to the cause the
// last line named says nothing; on again is said once.
func TestIPForwardCheckSaysNewCause(t *testing.T) {
	procSys := t.TempDir()
	write := func(rel, v string) {
		t.Helper()
		p := filepath.Join(procSys, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	var status string
	c := newIPForwardCheck(procSys, log, func(s string) { status = s })
	c.now = func() time.Time { return now }
	c.ifaces = func() []fwdIface {
		return []fwdIface{{"cni0", "the containers' bridge, where their packets arrive"}}
	}
	const (
		allOff = `"msg"="IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0)`
		cniOff = `"msg"="IPv4 FORWARDING IS OFF on cni0: net.ipv4.conf.cni0.forwarding=0 although net.ipv4.ip_forward is 1`
		on     = `"msg"="IPv4 forwarding is on again`
	)
	for i, step := range []struct {
		all, cni string
		after    time.Duration
		said     string // "" nothing
		status   string // what /status says, "" on
	}{
		{all: "0", cni: "0", status: "sysctl -w net.ipv4.ip_forward=1"},
		{all: "0", cni: "0", after: time.Minute, said: allOff, status: "sysctl -w net.ipv4.ip_forward=1"},
		{all: "0", cni: "0", after: time.Hour, status: "sysctl -w net.ipv4.ip_forward=1"},
		// ip_forward set; cni0 set to 0 again by something else.
		{all: "1", cni: "0", said: cniOff, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		{all: "1", cni: "0", after: time.Hour, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		// Back to ip_forward=0 an hour after the line: said at once.
		{all: "0", cni: "0", after: 30 * time.Second, said: allOff, status: "sysctl -w net.ipv4.ip_forward=1"},
		// Flapping between the two causes: a line a grace at most.
		{all: "1", cni: "0", after: 10 * time.Second, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		{all: "0", cni: "0", after: 10 * time.Second, status: "sysctl -w net.ipv4.ip_forward=1"},
		{all: "1", cni: "0", after: 10 * time.Second, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		{all: "1", cni: "0", after: 30 * time.Second, said: cniOff, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		{all: "0", cni: "0", after: 10 * time.Second, status: "sysctl -w net.ipv4.ip_forward=1"},
		{all: "1", cni: "0", after: 10 * time.Second, status: "sysctl -w net.ipv4.conf.cni0.forwarding=1"},
		{all: "1", cni: "1", said: on},
		{all: "1", cni: "1", after: time.Hour},
	} {
		write("net/ipv4/ip_forward", step.all)
		write("net/ipv4/conf/cni0/forwarding", step.cni)
		now = now.Add(step.after)
		lines = nil
		c.check(true)
		if step.said == "" && len(lines) != 0 || step.said != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.said)) {
			t.Errorf("step %d (ip_forward %s, cni0 %s): logged %q, want %q", i, step.all, step.cni, lines, step.said)
		} else if step.said != "" && step.said != on && strings.Contains(lines[0], `"level"=`) {
			t.Errorf("step %d: logged %q, want it at error level", i, lines)
		}
		if (status == "") != (step.status == "") || !strings.Contains(status, step.status) {
			t.Errorf("step %d (ip_forward %s, cni0 %s): /status ipForwardingOff %q, want it saying %q", i, step.all, step.cni, status, step.status)
		}
	}
}
