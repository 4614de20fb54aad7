package interop

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentd/agentd/subnet"
	"github.com/agentd/agentd/tests/cluster"
)

// besideBackends are the backends the tests below run, with the device
// each makes on a host.
var besideBackends = []struct{ name, device string }{
	{"vxlan", "flannel.1"},
	{"host-gw", ""},
	{"udp", "flannel0"},
}

// hostState is what a host's overlay is made of, as the tests compare it
// before and after: its routes, its overlay device's MAC, its subnet.env,
// and its lease's value and etcd lease.
type hostState struct {
	routes []string
	mac    string
	env    map[string]string
	lease  string
}

func (m *mixed) state(h *cluster.Host, device string) hostState {
	m.t.Helper()
	var s hostState
	var err error
	if s.routes, err = h.Routes(); err != nil {
		m.t.Fatal(err)
	}
	if device != "" {
		l, err := h.LinkByName(device)
		if err != nil {
			m.t.Fatalf("%s: %v", h, err)
		}
		s.mac = l.Attrs().HardwareAddr.String()
	}
	if s.env, err = h.SubnetEnv(); err != nil {
		m.t.Fatal(err)
	}
	sn, _ := m.lease(h)
	resp, err := m.cli.Get(m.ctx, prefix+"/subnets/"+subnet.MakeSubnetKey(sn, netip.Prefix{}))
	if err != nil || len(resp.Kvs) != 1 {
		m.t.Fatalf("%s: lease of %s: %v", h, sn, err)
	}
	s.lease = fmt.Sprintf("%s (etcd lease %x)", resp.Kvs[0].Value, resp.Kvs[0].Lease)
	return s
}

// diff says how s differs from before, or "".
func (s hostState) diff(before hostState) string {
	var d []string
	if !slices.Equal(s.routes, before.routes) {
		d = append(d, fmt.Sprintf("routes %q, were %q", s.routes, before.routes))
	}
	if s.mac != before.mac {
		d = append(d, fmt.Sprintf("device MAC %s, was %s", s.mac, before.mac))
	}
	if fmt.Sprint(s.env) != fmt.Sprint(before.env) {
		d = append(d, fmt.Sprintf("subnet.env %v, was %v", s.env, before.env))
	}
	if s.lease != before.lease {
		d = append(d, fmt.Sprintf("lease %s, was %s", s.lease, before.lease))
	}
	return strings.Join(d, "; ")
}

// TestAgentdBesideFlanneld: an operator starts agentd on a host where
// flanneld still runs, with the same etcd, prefix and subnet file:
//
//	ns sw ─┬─ h1 ── flanneld, then agentd
//	       ├─ h2 ── agentd
//	       └─ etcd
//
// agentd took over flanneld's device, routes, lease and subnet.env without
// a word (vxlan, host-gw), and both went on programming the host; under
// udp it stopped with an error that blamed its own descriptor keeper. It
// must exit 1 before it touches anything, naming flanneld's pid and saying
// to stop flanneld first; flanneld's host stays as it was (routes, device,
// subnet.env, lease value and etcd lease) and carries traffic.
func TestAgentdBesideFlanneld(t *testing.T) {
	t.Parallel()
	for _, tc := range besideBackends {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMixed(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, tc.name))
			h1, h2 := m.c.Host(1), m.c.Host(2)
			m.startAgentd(h2)
			fl := m.startFlanneld(h1)
			c1, c2 := m.container(h1), m.container(h2)
			m.pingEach(c1, c2)
			before := m.state(h1, tc.device)

			a, err := h1.StartAgent(m.ctx)
			if err != nil {
				t.Fatal(err)
			}
			code, log := waitExit(t, m.ctx, a.Process, 30*time.Second)
			if code < 0 {
				t.Fatalf("agentd on %s still runs 30 s after its start beside flanneld (pid %d); want it refused at start. Its log:\n%s", h1, fl.Pid(), log)
			}
			t.Logf("agentd beside flanneld exited with %d: %s", code, lastLine(log, "agentd failed"))
			if code != 1 {
				t.Errorf("agentd exited with %d, want 1", code)
			}
			for _, want := range []string{
				"flanneld (pid " + strconv.Itoa(fl.Pid()) + ") runs in this network namespace",
				"Stop flanneld first",
			} {
				if !strings.Contains(log, want) {
					t.Errorf("agentd's log does not say %q:\n%s", want, log)
				}
			}
			if fl.Exited() {
				t.Fatalf("flanneld exited with %d", fl.ExitCode())
			}
			if d := m.state(h1, tc.device).diff(before); d != "" {
				t.Errorf("%s changed after agentd's refusal: %s", h1, d)
			}
			m.pingEach(c1, c2)
		})
	}
}

// TestFlanneldStartedBesideAgentd: flanneld is started, with the same etcd,
// prefix and subnet file, on a host where agentd runs (going back to
// flanneld without stopping agentd). Under vxlan and host-gw flanneld took
// the lease key and subnet.env over, agentd wrote its lease value back,
// and both went on. agentd must stop, with exit code 1, naming flanneld's
// pid, and leave the host to flanneld, which carries its traffic. Under udp
// flanneld cannot bind agentd's port and exits by itself: agentd must not
// stop for that.
func TestFlanneldStartedBesideAgentd(t *testing.T) {
	t.Parallel()
	for _, tc := range besideBackends {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := newMixed(t, 2, fmt.Sprintf(`{"Network":%q,"Backend":{"Type":%q}}`, network, tc.name))
			h1, h2 := m.c.Host(1), m.c.Host(2)
			a := m.startAgentd(h1)
			m.startAgentd(h2)
			c1, c2 := m.container(h1), m.container(h2)
			m.pingEach(c1, c2)

			fl, err := h1.StartFlanneld(m.ctx, m.flanneld, ready)
			if tc.name == "udp" {
				if err == nil || !fl.Exited() {
					t.Fatalf("flanneld on %s still runs beside agentd's udp backend (%v); want it stopped by the port agentd holds", h1, err)
				}
				t.Logf("flanneld beside agentd: %v", err)
				// Three checks of agentd's: a flanneld seen once is no
				// reason to stop.
				code, log := waitExit(t, m.ctx, a.Process, 20*time.Second)
				if code >= 0 {
					t.Fatalf("agentd exited with %d after a flanneld that stopped by itself:\n%s", code, log)
				}
				m.pingEach(c1, c2)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			code, log := waitExit(t, m.ctx, a.Process, 30*time.Second)
			if code < 0 {
				t.Fatalf("agentd on %s still runs 30 s after flanneld (pid %d) started beside it; want it stopped. Its log:\n%s", h1, fl.Pid(), log)
			}
			t.Logf("agentd exited with %d: %s", code, lastLine(log, "agentd failed"))
			if code != 1 {
				t.Errorf("agentd exited with %d, want 1", code)
			}
			want := "flanneld (pid " + strconv.Itoa(fl.Pid()) + ") started in this network namespace while agentd ran"
			if !strings.Contains(log, want) {
				t.Errorf("agentd's log does not say %q:\n%s", want, log)
			}
			if fl.Exited() {
				t.Fatalf("flanneld exited with %d", fl.ExitCode())
			}
			m.pingEach(c1, c2)
		})
	}
}

// waitExit waits up to d for p to exit and returns its exit code, -1 if it
// still runs, and the last start's part of its log.
func waitExit(t *testing.T, ctx context.Context, p *cluster.Process, d time.Duration) (int, string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, d)
	code, err := p.Wait(wctx)
	cancel()
	if err != nil {
		code = -1
	}
	b, rerr := os.ReadFile(p.LogPath)
	if rerr != nil {
		t.Fatal(rerr)
	}
	log := string(b)
	if i := strings.LastIndex(log, "\n=== "); i >= 0 {
		log = log[i+1:]
	}
	return code, log
}

// lastLine is the last line of log that holds sub, or "".
func lastLine(log, sub string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], sub) {
			return lines[i]
		}
	}
	return ""
}
