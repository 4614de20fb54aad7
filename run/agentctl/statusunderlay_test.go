package main

import (
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

// TestStatusUnderlayDown: an agent's underlayDown (its external interface
// carries no packets) is shown on a line of its own saying which interface,
// since when, why and what follows, escaped like the agent's other text;
// the agent is still ready (exit 0). With vxlan nothing said so before; with
// host-gw only the last resync's error did. An agent whose interface
// carries packets, or that is older than the field, shows no such line.
func TestStatusUnderlayDown(t *testing.T) {
	since := time.Date(2026, 12, 7, 5, 59, 48, 0, time.UTC)
	now := since.Add(12 * time.Second)
	ready := agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "vxlan"}
	for _, c := range []struct {
		d    agent.UnderlayDown
		want string
	}{
		{agent.UnderlayDown{Interface: "eth0", State: "down", Since: since},
			"underlay eth0 is down since 2026-12-07 05:59:48Z, 12 s ago: set down; ip link set eth0 up; no traffic between this host and the others until it carries packets again (the agent stays ready: nothing of its own is missing)\n"},
		{agent.UnderlayDown{Interface: "bond0", State: "no carrier", Since: since},
			"underlay bond0 has no carrier since 2026-12-07 05:59:48Z, 12 s ago: up, but its cable, switch port or other end is down; no traffic"},
		{agent.UnderlayDown{Interface: "wl0", State: "dormant", Since: since},
			"underlay wl0 is dormant since 2026-12-07 05:59:48Z, 12 s ago (the kernel's operational state); no traffic"},
		{agent.UnderlayDown{Interface: "eth0\n\x1b[2J", State: "down", Since: since},
			`underlay eth0\n\x1b[2J is down since`},
	} {
		st := ready
		st.UnderlayDown = &c.d
		if out := statusLines(st, now, time.UTC); !strings.Contains(out, c.want) {
			t.Errorf("%+v: status lacks %q:\n%s", c.d, c.want, out)
		}
		st.UnderlayDown.Since = since
		if code, out, errOut := statusRun(t, &agentAnswers{st: st}); code != 0 || !strings.Contains(out, "\nunderlay ") {
			t.Errorf("%+v: exit %d, want 0 and an underlay line\n%s%s", c.d, code, out, errOut)
		}
	}
	if code, out, errOut := statusRun(t, &agentAnswers{st: ready}); code != 0 || strings.Contains(out, "underlay") {
		t.Errorf("status of an agent whose underlay carries packets: exit %d, want no underlay line\n%s%s", code, out, errOut)
	}
}
