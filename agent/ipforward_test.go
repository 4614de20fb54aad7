package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
)

// TestIPForwardCheckSaysEachChange: with net.ipv4.ip_forward at 0 the
// kernel forwards no container's packet to the overlay, while every
// backend programs its peers as if nothing were wrong (helper 254, on the
// namespace cluster). /status's IPForwardingOff follows each read, the
// start's too. The log says it once, at error level, when reconcile passes
// have found it 0 for the grace (a minute: on a docker host dockerd sets
// it seconds after the agent is ready, at every boot, and that is no
// error), and once when it is on again after that line (any value but 0:
// the kernel forwards at 2 or -1 too). A file that cannot be read is said
// once and clears /status. Before 2026-12-06 nothing was said.
func TestIPForwardCheckSaysEachChange(t *testing.T) {
	procSys := t.TempDir()
	path := filepath.Join(procSys, "net/ipv4/ip_forward")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	var status string
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	c := newIPForwardCheck(procSys, log, func(s string) { status = s })
	c.now = func() time.Time { return now }
	const off, on, unread = `"msg"="IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0)`, `"msg"="IPv4 forwarding is on again`, `"msg"="cannot read net.ipv4.ip_forward`
	for i, step := range []struct {
		value string        // "" removes the file
		start bool          // the start's check, not a pass's
		after time.Duration // the clock moves on by this before the check
		said  string        // what the check logs, "" nothing
		off   bool          // /status's IPForwardingOff set
	}{
		// A docker host's boot: 0 until dockerd starts.
		{value: "0\n", start: true, off: true},
		{value: "0\n", off: true},
		{value: "0\n", after: 10 * time.Second, off: true},
		{value: "1\n", after: 5 * time.Second},
		{value: "1\n", after: time.Hour},
		// Nothing sets it.
		{value: "0\n", off: true},
		{value: "0\n", after: 30 * time.Second, off: true},
		{value: "0\n", after: 30 * time.Second, said: off, off: true},
		{value: "0\n", after: time.Hour, off: true},
		{value: "1\n", said: on},
		{value: "2\n"},
		{value: "0\n", off: true},
		{value: "0\n", after: time.Minute, said: off, off: true},
		{value: "-1\n", said: on},
		// Found 0 at the start and by a pass a minute later.
		{value: "0\n", start: true, off: true},
		{value: "0\n", after: time.Minute, off: true},
		{value: "0\n", after: time.Minute, said: off, off: true},
		{value: "", said: unread},
		{value: ""},
		{value: "1\n"},
		{value: "x\n", said: unread},
		{value: "0\n", off: true},
	} {
		if step.value == "" {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(path, []byte(step.value), 0o644); err != nil {
			t.Fatal(err)
		}
		now = now.Add(step.after)
		lines = nil
		c.check(!step.start)
		if step.said == "" && len(lines) != 0 || step.said != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.said)) {
			t.Errorf("step %d, ip_forward %q: logged %q, want %q", i, step.value, lines, step.said)
		} else if step.said == off && strings.Contains(lines[0], `"level"=`) {
			t.Errorf("step %d, ip_forward %q: logged %q, want it at error level", i, step.value, lines)
		}
		if (status != "") != step.off || step.off && !strings.Contains(status, "sysctl -w net.ipv4.ip_forward=1") {
			t.Errorf("step %d, ip_forward %q: /status says %q; want it off, saying how to set it: %v", i, step.value, status, step.off)
		}
	}
}
