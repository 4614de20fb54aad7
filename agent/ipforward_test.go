package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr/funcr"
)

// TestIPForwardCheckSaysEachChange: with net.ipv4.ip_forward at 0 the
// kernel forwards no container's packet to the overlay, while every
// backend programs its peers as if nothing were wrong (helper 254, on the
// namespace cluster). The check says it once at error level when the
// value is found 0, once when it is on again (any value but 0: the
// kernel forwards at 2 or -1 too), and sets /status's IPForwardingOff
// while it is 0; a check that finds what the last one found says nothing.
// A file that cannot be read is said once and clears /status. Before
// 2026-12-06 nothing was said.
func TestIPForwardCheckSaysEachChange(t *testing.T) {
	procSys := t.TempDir()
	path := filepath.Join(procSys, "net/ipv4/ip_forward")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var lines []string
	log := funcr.New(func(_, args string) { lines = append(lines, args) }, funcr.Options{})
	var status string
	c := newIPForwardCheck(procSys, log, func(s string) { status = s })
	for i, step := range []struct {
		value string // "" removes the file
		said  string // what the check logs, "" nothing
		off   bool   // /status's IPForwardingOff set
	}{
		{"1\n", "", false},
		{"1\n", "", false},
		{"0\n", `"msg"="IPv4 FORWARDING IS OFF (net.ipv4.ip_forward=0)`, true},
		{"0\n", "", true},
		{"1\n", `"msg"="IPv4 forwarding is on again`, false},
		{"2\n", "", false},
		{"0\n", "IPv4 FORWARDING IS OFF", true},
		{"-1\n", "IPv4 forwarding is on again", false},
		{"0\n", "IPv4 FORWARDING IS OFF", true},
		{"", `"msg"="cannot read net.ipv4.ip_forward`, false},
		{"", "", false},
		{"1\n", "", false},
		{"x\n", "cannot read net.ipv4.ip_forward", false},
		{"0\n", "IPv4 FORWARDING IS OFF", true},
	} {
		if step.value == "" {
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(path, []byte(step.value), 0o644); err != nil {
			t.Fatal(err)
		}
		lines = nil
		c.check()
		if step.said == "" && len(lines) != 0 || step.said != "" && (len(lines) != 1 || !strings.Contains(lines[0], step.said)) {
			t.Errorf("step %d, ip_forward %q: logged %q, want %q", i, step.value, lines, step.said)
		} else if step.off && step.said != "" && strings.Contains(lines[0], `"level"=`) {
			t.Errorf("step %d, ip_forward %q: logged %q, want it at error level", i, step.value, lines)
		}
		if (status != "") != step.off || step.off && !strings.Contains(status, "sysctl -w net.ipv4.ip_forward=1") {
			t.Errorf("step %d, ip_forward %q: /status says %q; want it off, saying how to set it: %v", i, step.value, status, step.off)
		}
	}
}
