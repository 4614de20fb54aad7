package main

import (
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/agent"
)

// TestStatusKeeperLine: a udp agent's descriptor keeper (/status udpKeeper)
// gets a line of its own while it is down, saying what follows, or once
// one was started anew after a death, saying how many and its pid; the
// agent is still ready (exit 0). A keeper up as it started, an agent of
// another backend and one older than the field get no such line. Before,
// only the metrics agentd_udp_keeper_up and
// agentd_udp_keeper_restarts_total said either.
func TestStatusKeeperLine(t *testing.T) {
	ready := agent.Status{Ready: true, Subnet: "10.244.7.0/24", PublicIP: "198.18.0.1", Backend: "udp", MTU: 1472, Offloads: "csum,tso4"}
	for _, c := range []struct {
		name string
		k    agent.UDPKeeper
		want string
	}{
		{"down", agent.UDPKeeper{},
			"udp keeper DOWN: nothing holds flannel0's queues and the sockets, so an agent restart drops what is in flight (the agent tries to start one again, at least once a minute; its log says why it cannot)\n"},
		{"down after deaths", agent.UDPKeeper{Restarts: 3},
			"udp keeper DOWN: nothing holds flannel0's queues and the sockets, so an agent restart drops what is in flight (the agent tries to start one again, at least once a minute; its log says why it cannot); 3 started anew after the one before died while the agent ran ("},
		{"restarted", agent.UDPKeeper{Up: true, Pid: 4711, Restarts: 1},
			"udp keeper up (pid 4711); 1 started anew after the one before died while the agent ran (killed: by hand, the OOM killer, a stop of the service's whole cgroup; the agent's log says how each ended)\n"},
		{"restarted and replaced", agent.UDPKeeper{Up: true, Pid: 4712, Restarts: 2, Replaced: true},
			"udp keeper up (pid 4712); 2 started anew after the one before died while the agent ran (killed: by hand, the OOM killer, a stop of the service's whole cgroup; the agent's log says how each ended); the agent replaced the keeper it met at its start with one of its own\n"},
	} {
		st := ready
		st.UDPKeeper = &c.k
		if out := statusLines(st, time.Now(), time.UTC); !strings.Contains(out, "\noffloads csum,tso4 (flannel0: TSO on, USO off: the kernel refused it, as before Linux 6.2, and cuts UDP sends before the device)\n"+c.want) {
			t.Errorf("%s: status lacks, under offloads, %q:\n%s", c.name, c.want, out)
		}
		if code, out, errOut := statusRun(t, &agentAnswers{st: st}); code != 0 || !strings.Contains(out, "\nudp keeper ") {
			t.Errorf("%s: exit %d, want 0 and a udp keeper line\n%s%s", c.name, code, out, errOut)
		}
	}
	for _, c := range []struct {
		name string
		k    *agent.UDPKeeper
	}{
		{"up as it started", &agent.UDPKeeper{Up: true, Pid: 4711}},
		{"up as it started, replaced at the start", &agent.UDPKeeper{Up: true, Pid: 4711, Replaced: true}},
		{"an agent without a keeper, or older than the field", nil},
	} {
		st := ready
		st.UDPKeeper = c.k
		if code, out, errOut := statusRun(t, &agentAnswers{st: st}); code != 0 || strings.Contains(out, "keeper") {
			t.Errorf("%s: exit %d, want 0 and no udp keeper line\n%s%s", c.name, code, out, errOut)
		}
	}
}
